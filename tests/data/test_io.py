"""Prepared splits are read back with one located error line for every kind of bad row (no traceback)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tuneforge.cli.main import main
from tuneforge.data.io import read_examples
from tuneforge.errors import UserError


def _chat(user: str, answer: str) -> str:
    return json.dumps({"messages": [{"role": "user", "content": user}, {"role": "assistant", "content": answer}],
                       "meta": {"task": "chat"}})


GOOD = _chat("A first, valid question?", "A valid, informative answer.").encode()
# (name, the bytes of train.jsonl's second line, the field its error line names)
BAD_LINES = [
    ("invalid JSON", b'{"messages": [', "(record)"),
    ("not UTF-8", b'{"messages": "caf\xe9"}', "(line)"),
    ("lone surrogate", b'{"messages": [{"role": "user", "content": "Hi?"}, {"role": "assistant", "content": "\\ud800"}]}',
     "messages[1].content"),
    ("not an object", b"[1, 2]", "(record)"),
    ("no messages", b'{"prompt": "Hi?"}', "messages"),
    ("ends with the user", b'{"messages": [{"role": "user", "content": "Hi?"}]}', "messages"),
    ("meta is a string", _chat("Another question?", "Another answer.").replace('{"task": "chat"}', '"chat"').encode(),
     "meta"),
]


def _folder(tmp_path: Path, bad: bytes) -> Path:
    folder = tmp_path / "prepared"
    folder.mkdir()
    (folder / "train.jsonl").write_bytes(GOOD + b"\n" + bad + b"\n")
    (folder / "val.jsonl").write_bytes(_chat("Val question?", "Val answer here.").encode() + b"\n")
    (folder / "test.jsonl").write_bytes(_chat("Test question?", "Test answer here.").encode() + b"\n")
    return folder


@pytest.mark.parametrize(("name", "bad", "field"), BAD_LINES, ids=[c[0] for c in BAD_LINES])
def test_bad_prepared_row_is_one_located_error(tmp_path, name, bad, field):
    folder = _folder(tmp_path, bad)
    with pytest.raises(UserError) as err:
        list(read_examples(folder / "train.jsonl"))
    assert err.value.render().startswith(f"error: {folder / 'train.jsonl'}:2: {field}: ")


@pytest.mark.parametrize(("name", "bad", "field"), BAD_LINES, ids=[c[0] for c in BAD_LINES])
def test_cli_on_a_bad_prepared_folder_exits_2_without_traceback(tmp_path, capsys, name, bad, field):
    folder = _folder(tmp_path, bad)
    for args in (["data", "validate", str(folder)], ["data", "prepare", "--input", str(folder), "--out", str(tmp_path / "o")]):
        assert main([*args, "--no-tokenizer"]) == 2
        err = capsys.readouterr().err
        assert "Traceback" not in err and f"{folder / 'train.jsonl'}:2: {field}: " in err, err
