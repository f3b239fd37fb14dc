"""`tuneforge train` (the sft strategy's prepare_splits) trains only on complete prepared data made with the recipe's redaction setting."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from tuneforge.config.data import DataConfig
from tuneforge.config.loader import load_recipe
from tuneforge.data.prepare import prepare_data
from tuneforge.errors import UserError
from tuneforge.strategies.sft import prepare_splits


def _chats(path: Path, n: int = 30, extra: str = "") -> Path:
    rows = [{"messages": [{"role": "user", "content": f"Question {i}: what is {i} times three?{extra}"},
                          {"role": "assistant", "content": f"{i} times three is {3 * i}."}]} for i in range(n)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def _recipe(data: Path, **data_fields: object):
    return load_recipe(None, {"data.path": str(data), **{f"data.{k}": v for k, v in data_fields.items()}})


def test_a_folder_with_only_train_jsonl_is_refused_not_trained_without_validation(tmp_path):
    prepare_data(DataConfig(path=str(_chats(tmp_path / "d.jsonl"))), tmp_path / "p")
    partial = tmp_path / "partial"  # what a prepare killed after train.jsonl used to leave
    partial.mkdir()
    (partial / "train.jsonl").write_bytes((tmp_path / "p" / "train.jsonl").read_bytes())
    run = SimpleNamespace(path=tmp_path / "run")
    with pytest.raises(UserError, match="not a complete prepared folder .val.jsonl, test.jsonl missing"):
        prepare_splits(_recipe(partial), run, None)
    splits = prepare_splits(_recipe(tmp_path / "p"), run, None)
    assert splits.train == tmp_path / "p" / "train.jsonl" and splits.val == tmp_path / "p" / "val.jsonl"


def test_the_runs_own_half_prepared_data_is_prepared_again(tmp_path):
    data = _chats(tmp_path / "d.jsonl")
    run = SimpleNamespace(path=tmp_path / "run")
    (run.path / "data").mkdir(parents=True)
    (run.path / "data" / "train.jsonl").write_text(data.read_text().splitlines()[0] + "\n")  # killed mid-prepare
    splits = prepare_splits(_recipe(data), run, None)
    assert splits.val is not None and splits.val.stat().st_size > 0
    assert len(splits.train.read_text().splitlines()) == 24 and (run.path / "data" / "splits.json").is_file()


def test_prepared_data_with_another_redaction_setting_is_refused(tmp_path):
    data = _chats(tmp_path / "d.jsonl", extra=" Call +44 20 7946 0958.")
    prepare_data(DataConfig(path=str(data)), tmp_path / "raw")
    run = SimpleNamespace(path=tmp_path / "run")
    with pytest.raises(UserError, match="data.redact_pii"):
        prepare_splits(_recipe(tmp_path / "raw", redact_pii=True), run, None)
    # A resumed run whose data/ was prepared without redaction, now resumed with it.
    prepare_splits(_recipe(data), run, None)
    with pytest.raises(UserError, match="prepared without --redact-pii"):
        prepare_splits(_recipe(data, redact_pii=True), run, None)
