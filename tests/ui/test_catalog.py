"""Run status from the folder and process liveness; crafted paths refused; the launch check's messages."""

from __future__ import annotations

import json

import pytest

from tests.ui.conftest import hold_lock, make_run
from tuneforge.errors import UserError
from tuneforge.ui import catalog, launch

RESULTS = {"rows": [
    {"system": "base zero-shot", "task": "sentiment", "extra": {"kind": "test"},
     "metrics": {"accuracy": {"value": 0.5, "ci_low": 0.4, "ci_high": 0.6, "n": 100}}},
    {"system": "tuned", "task": "sentiment", "extra": {"kind": "test"},
     "metrics": {"accuracy": {"value": 0.9, "ci_low": 0.84, "ci_high": 0.95, "n": 100}}},
]}


def test_status_of_finished_failed_running_and_crashed_runs(tmp_path):
    make_run(tmp_path, "done", finished=True, results=RESULTS)
    make_run(tmp_path, "broke")
    running = make_run(tmp_path, "busy")
    crashed = make_run(tmp_path, "crashed")
    # A process killed with -9 leaves its pid in the lock file; that pid is no longer alive.
    (crashed / ".lock").write_text(json.dumps({"pid": 2**22 + 12345, "host": "h", "command": "train"}))
    holder = hold_lock(running)
    try:
        status = {r.name: r.status for r in catalog.list_runs(tmp_path)}
    finally:
        holder.kill()
        holder.wait()
    assert status == {"done": "finished", "broke": "failed", "busy": "running", "crashed": "failed"}
    assert catalog.status_of(running) == "failed"  # its process gone, it no longer shows running


def test_summary_shows_the_primary_metric_and_verdict(tmp_path):
    make_run(tmp_path, "done", finished=True, results=RESULTS)
    (summary,) = catalog.list_runs(tmp_path)
    assert summary.kind == "train" and summary.method == "lora" and summary.model == "tiny"
    assert summary.metric.startswith("accuracy 0.900") and "tuned" in summary.metric
    assert summary.verdict == "yes"


@pytest.mark.parametrize("name", ["..", "../x", "/etc", ".hidden", "a/b", "nope"])
def test_crafted_paths_are_refused(tmp_path, name):
    runs = tmp_path / "runs"
    make_run(runs, "ok")
    (tmp_path / "outside").mkdir()
    with pytest.raises(UserError):
        catalog.run_path(runs, name)
    assert catalog.run_path(runs, "ok") == (runs / "ok").resolve()


def test_a_symlink_out_of_the_runs_dir_is_refused(tmp_path):
    runs = tmp_path / "runs"
    make_run(tmp_path, "elsewhere")
    runs.mkdir()
    (runs / "link").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(UserError):
        catalog.run_path(runs, "link")


def test_two_mistakes_are_both_reported_with_their_lines(tmp_path):
    text = "model:\n  name: x\ntrain:\n  learning_rate: fast\n  epochz: 2\n"
    recipe, problems = launch.validate(tmp_path, text)
    assert recipe is None
    assert any(p.startswith("recipe.yaml:4: train.learning_rate") for p in problems), problems
    assert any(p.startswith("recipe.yaml:5: train.epochz") and "epochs" in p for p in problems), problems
