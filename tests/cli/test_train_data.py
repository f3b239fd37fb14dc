"""`tuneforge train` trains only on complete prepared data made with the recipe's redaction setting."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from tuneforge.cli.train import resolve_data
from tuneforge.config.loader import load_recipe
from tuneforge.data.config import DataConfig
from tuneforge.data.prepare import prepare_data
from tuneforge.errors import UserError


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
        resolve_data(_recipe(partial), run, None, main=True)
    train, val = resolve_data(_recipe(tmp_path / "p"), run, None, main=True)
    assert train == tmp_path / "p" / "train.jsonl" and val == tmp_path / "p" / "val.jsonl"


def test_the_runs_own_half_prepared_data_is_prepared_again(tmp_path):
    data = _chats(tmp_path / "d.jsonl")
    run = SimpleNamespace(path=tmp_path / "run")
    (run.path / "data").mkdir(parents=True)
    (run.path / "data" / "train.jsonl").write_text(data.read_text().splitlines()[0] + "\n")  # killed mid-prepare
    train, val = resolve_data(_recipe(data), run, None, main=True)
    assert val is not None and val.stat().st_size > 0
    assert len(train.read_text().splitlines()) == 24 and (run.path / "data" / "splits.json").is_file()


def test_prepared_data_with_another_redaction_setting_is_refused(tmp_path):
    data = _chats(tmp_path / "d.jsonl", extra=" Call +44 20 7946 0958.")
    prepare_data(DataConfig(path=str(data)), tmp_path / "raw")
    run = SimpleNamespace(path=tmp_path / "run")
    with pytest.raises(UserError, match="data.redact_pii"):
        resolve_data(_recipe(tmp_path / "raw", redact_pii=True), run, None, main=True)
    # A resumed run whose data/ was prepared without redaction, now resumed with it.
    resolve_data(_recipe(data), run, None, main=True)
    with pytest.raises(UserError, match="prepared without --redact-pii"):
        resolve_data(_recipe(data, redact_pii=True), run, None, main=True)
