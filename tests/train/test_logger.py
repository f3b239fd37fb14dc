"""Curves of a resumed run: TensorBoard shows every step once, not the killed process's steps twice."""

from __future__ import annotations

from pathlib import Path

from tuneforge.train.logger import MetricsLogger


class FolderRun:
    """The part of a run folder the logger writes to."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.rows: list[dict] = []

    def log_metrics(self, **row) -> None:
        self.rows.append(row)


def _steps(folder: Path, tag: str) -> list[int]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(folder / "tensorboard"))
    acc.Reload()
    return [e.step for e in acc.Scalars(tag)]


def test_resumed_curves_drop_the_steps_logged_after_the_checkpoint(tmp_path):
    run = FolderRun(tmp_path)
    first = MetricsLogger(run, enabled=True)  # the process that is killed after step 5, checkpoint at 2
    for step in range(1, 6):
        first.log(step, "train", loss=1.0 / step)
    first.close()
    second = MetricsLogger(run, enabled=True)  # the resumed process
    second.resumed_at(2)
    for step in range(3, 8):
        second.log(step, "train", loss=0.5 / step)
    second.close()
    assert _steps(tmp_path, "train/loss") == [1, 2, 3, 4, 5, 6, 7]


def test_a_run_started_over_keeps_only_its_new_curve(tmp_path):
    run = FolderRun(tmp_path)
    first = MetricsLogger(run, enabled=True)
    for step in range(0, 4):
        first.log(step, "val", loss=2.0)
    first.close()
    again = MetricsLogger(run, enabled=True)
    again.resumed_at(None)  # killed before its first checkpoint: starts at step 0 in the same folder
    again.log(0, "val", loss=1.0)
    again.close()
    assert _steps(tmp_path, "val/loss") == [0]
