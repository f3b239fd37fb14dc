"""Metrics to metrics.jsonl (the run's record) and TensorBoard event files (curves), main process only."""

from __future__ import annotations

import logging
from typing import Any

from tuneforge.runs import Run

log = logging.getLogger(__name__)


class MetricsLogger:
    def __init__(self, run: Run, enabled: bool) -> None:
        self.run = run
        self.enabled = enabled
        self.writer = None
        if enabled:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.writer = SummaryWriter(log_dir=str(self.run.path / "tensorboard"))
            except ImportError:  # tensorboard is a core dependency, but do not fail a run over curves
                log.warning("tensorboard is not installed: no event files")

    def log(self, step: int, split: str, **values: Any) -> None:
        if not self.enabled:
            return
        self.run.log_metrics(step=step, split=split, **values)
        if self.writer is not None:
            for key, value in values.items():
                if isinstance(value, int | float):
                    self.writer.add_scalar(f"{split}/{key}", value, step)

    def resumed_at(self, step: int | None) -> None:
        """A resumed run logs again every step after its checkpoint (``step``; None: it starts over).
        Reopen the event file with TensorBoard's purge step, so the curves drop the points the killed
        process logged after that checkpoint instead of drawing them twice."""
        if self.writer is None:
            return
        from torch.utils.tensorboard import SummaryWriter

        self.writer.close()
        self.writer = SummaryWriter(log_dir=str(self.run.path / "tensorboard"),
                                    purge_step=0 if step is None else step + 1)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.flush()
            self.writer.close()
