"""Supervised fine-tuning: full, freeze, LoRA/DoRA/rsLoRA, QLoRA, IA3, prompt and prefix tuning.

``from tuneforge.train import train, TrainResult``. Imports are lazy: the recipe schema imports
``tuneforge.train.config`` and must not pull in torch.
"""

from __future__ import annotations

from typing import Any

__all__ = ["TrainResult", "train"]


def __getattr__(name: str) -> Any:
    if name == "train":
        from tuneforge.train.api import train

        return train
    if name == "TrainResult":
        from tuneforge.train.result import TrainResult

        return TrainResult
    raise AttributeError(name)
