"""The training engine: supervised fine-tuning (full, freeze, LoRA/DoRA/rsLoRA, QLoRA, IA3, prompt and
prefix tuning) of one model on prepared splits, with validation, checkpoints and exact resume.

``from tuneforge.train import train, TrainResult``. What composes the engine with evaluation (multi-task,
sequential stages, hyperparameter search, train-then-evaluate) lives in :mod:`tuneforge.strategies`.
"""

from tuneforge.train.api import train
from tuneforge.train.result import TrainResult

__all__ = ["TrainResult", "train"]
