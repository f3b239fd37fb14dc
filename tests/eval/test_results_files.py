"""Evaluation's files are replaced whole: a crash while writing leaves the previous file, not half of one."""

from __future__ import annotations

import json

import pytest

from tuneforge.eval import evaluate


def test_a_crash_while_writing_predictions_keeps_the_previous_file(tmp_path, monkeypatch):
    path = tmp_path / "eval" / "predictions-tuned.jsonl"
    evaluate.write_predictions(path, [{"id": i, "prediction": "positive"} for i in range(3)])
    before = path.read_text()
    real = json.dumps

    def dumps(value, **kw):
        if value.get("id") == 2:  # the process dies while writing the third record (disk full, a kill)
            raise OSError(28, "No space left on device")
        return real(value, **kw)

    monkeypatch.setattr(evaluate.json, "dumps", dumps)
    with pytest.raises(OSError):
        evaluate.write_predictions(path, [{"id": i, "prediction": "negative"} for i in range(3)])
    assert path.read_text() == before
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary file left behind
