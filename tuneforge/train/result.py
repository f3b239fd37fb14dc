"""What a training run hands back to its caller (quickstart, search, stages, benchmarks)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any


@dataclass
class TrainResult:
    output_dir: Path  # run/adapter for PEFT methods, run/model for full and freeze
    method: str
    initial_val_loss: float | None
    best_val_loss: float | None
    final_val_loss: float | None
    steps: int
    train_tokens: int
    tokens_per_s: float
    trainable_params: int
    total_params: int
    best_step: int | None = None
    stopped_early: bool = False
    resumed_from: int | None = None
    train_seconds: float = 0.0
    # The trained model in memory (unwrapped; the exported weights), for callers that evaluate right away.
    model: Any = field(default=None, repr=False, compare=False)

    def to_json(self) -> str:
        data = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "model"}
        data["output_dir"] = str(self.output_dir)
        return json.dumps(data, indent=1)
