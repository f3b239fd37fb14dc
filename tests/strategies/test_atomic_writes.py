"""Strategy outputs (summaries, mixtures, child runs) are written atomically: a failed write leaves the old files."""

from __future__ import annotations

import pytest

from tests.faults import disk_full, snapshot


def test_a_failed_strategy_write_leaves_the_previous_files(tmp_path):
    from tuneforge.config import load_recipe
    from tuneforge.runs import Run
    from tuneforge.strategies.common import write_json
    from tuneforge.strategies.mixture import write_jsonl

    parent = Run(path=tmp_path / "run", recipe=load_recipe(None))
    rows = [{"messages": [], "meta": {"task": "a", "id": i, "pad": "x" * 100}} for i in range(50)]
    write_json(parent.path / "strategy.json", {"rows": rows})
    write_jsonl(parent.path / "data" / "mixture" / "train.jsonl", rows)
    parent.child(parent.recipe, "stages", "1-a")
    before = snapshot(parent.path)
    with disk_full(1024):  # each file is larger than 1 kB
        with pytest.raises(OSError):
            write_json(parent.path / "strategy.json", {"rows": rows[::-1]})
        with pytest.raises(OSError):
            write_jsonl(parent.path / "data" / "mixture" / "train.jsonl", rows[::-1])
        with pytest.raises(OSError):
            parent.child(parent.recipe, "stages", "1-a")
    assert snapshot(parent.path) == before
