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
