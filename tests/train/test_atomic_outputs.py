"""Training outputs are written atomically: a write that fails midway (here: a full disk) leaves the
previous file or folder whole and no partial file beside it, and finished files are fsynced."""

from __future__ import annotations

import pytest

from tests.faults import WRITE_ERRORS, disk_full, fsynced, snapshot
from tuneforge.train.api import save_output


def test_a_failed_save_leaves_the_previous_model_folder(tmp_path, tiny_model, tokenizer):
    save_output(tiny_model, tokenizer, tmp_path / "model")
    before = snapshot(tmp_path)
    with disk_full(64 * 1024), pytest.raises(WRITE_ERRORS):  # the weights are megabytes
        save_output(tiny_model, tokenizer, tmp_path / "model")
    assert snapshot(tmp_path) == before


def test_saved_model_files_reach_the_disk_before_the_folder_appears(tmp_path, tiny_model, tokenizer, monkeypatch):
    with fsynced(monkeypatch) as names:
        save_output(tiny_model, tokenizer, tmp_path / "model")
    assert {p.name for p in (tmp_path / "model").iterdir()} <= set(names)


def test_a_failed_strategy_write_leaves_the_previous_files(tmp_path):
    from tuneforge.config import load_recipe
    from tuneforge.runs import Run
    from tuneforge.train.mixture import write_jsonl
    from tuneforge.train.stages_common import child_run, write_json

    parent = Run(path=tmp_path / "run", recipe=load_recipe(None))
    rows = [{"messages": [], "meta": {"task": "a", "id": i, "pad": "x" * 100}} for i in range(50)]
    write_json(parent.path / "strategy.json", {"rows": rows})
    write_jsonl(parent.path / "data" / "mixture" / "train.jsonl", rows)
    child_run(parent, parent.recipe, "stages", "1-a")
    before = snapshot(parent.path)
    with disk_full(1024):  # each file is larger than 1 kB
        with pytest.raises(OSError):
            write_json(parent.path / "strategy.json", {"rows": rows[::-1]})
        with pytest.raises(OSError):
            write_jsonl(parent.path / "data" / "mixture" / "train.jsonl", rows[::-1])
        with pytest.raises(OSError):
            child_run(parent, parent.recipe, "stages", "1-a")
    assert snapshot(parent.path) == before
