"""Stop from the UI ends a launched run even when the UI runs with SIGINT ignored (`nohup tuneforge ui &`)."""

from __future__ import annotations

import os
import signal
import time

from tests.ui.conftest import training_recipe
from tuneforge.ui import launch
from tuneforge.ui.catalog import pid_alive, read_metrics, run_path, status_of, ui_record


def test_stop_ends_a_run_launched_by_a_ui_that_ignores_sigint(tmp_path, tiny_model_dir):
    runs = tmp_path / "runs"
    before = signal.signal(signal.SIGINT, signal.SIG_IGN)  # what a shell's background job gets
    try:
        name, problems = launch.launch(runs, training_recipe(tiny_model_dir, "bg", 5000))
    finally:
        signal.signal(signal.SIGINT, before)
    assert problems == [] and name == "bg"
    pid = int(ui_record(runs, name)["pid"])
    try:
        deadline = time.monotonic() + 300
        while not any(r.get("split") == "train" for r in read_metrics(run_path(runs, name))):
            assert pid_alive(pid), (runs / ".ui" / "bg.log").read_text()
            assert time.monotonic() < deadline, "the run logged no training step"
            time.sleep(0.2)
        assert launch.stop(runs, name)
        deadline = time.monotonic() + 120
        while pid_alive(pid):
            launch.reap()
            assert time.monotonic() < deadline, "the run ignored Stop"
            time.sleep(0.2)
    finally:
        if pid_alive(pid):
            os.killpg(pid, signal.SIGKILL)  # its own session: pgid == pid
    assert status_of(run_path(runs, name), ui_record(runs, name)) == "killed"
    assert "interrupted" in (runs / ".ui" / "bg.log").read_text()
