"""Malformed recipes: one `error:` message naming file (and line) and field, exit status 2, no traceback."""

from __future__ import annotations

import re

import pytest

from tuneforge.cli.main import main

# (name, recipe bytes, a regex the error must match after "error: <path>")
CASES = [
    ("unclosed bracket", b"train:\n  learning_rate: [1,\n", r":\d+: invalid YAML: "),
    ("unclosed quote", b"data:\n  path: 'reviews.csv\n", r":\d+: invalid YAML: .*line 2"),
    ("tab indentation", b"train:\n\tepochs: 2\n", r":2: invalid YAML: .*'\\t'"),
    ("duplicate key", b"train:\n  epochs: 2\n  learning_rate: 1e-4\n  epochs: 3\n",
     r":4: invalid YAML: duplicate key 'epochs' \(first on line 2\)"),
    ("duplicate section", b"train:\n  epochs: 2\ndata:\n  path: x.jsonl\ntrain:\n  epochs: 3\n",
     r":5: invalid YAML: duplicate key 'train' \(first on line 1\)"),
    ("wrong type", b"train:\n  epochs: two\n", r": 1 problem in the recipe\n  - .*:2: train.epochs: "),
    ("section is not a mapping", b"train: 5\n", r": 1 problem in the recipe\n  - .*:1: train: "),
    ("unknown section", b"trian:\n  epochs: 2\n", r": 1 problem in the recipe\n  - .*:1: trian: unknown key"),
    ("top level is a list", b"- train\n- data\n", r":1: a recipe must be a mapping"),
    ("top level is a string", b"just some words\n", r":1: a recipe must be a mapping"),
    ("two documents", b"train: {}\n---\ndata: {}\n", r":\d+: invalid YAML: "),
    ("unhashable key", b"[a, b]: 1\n", r":1: invalid YAML: "),
    ("binary file", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\xff\xfe", r": not UTF-8 text"),
    ("NUL byte", b"train:\n  epochs: 2\x00\n", r":2: invalid YAML: unacceptable character #x0000"),
    ("lone surrogate escape", b'data:\n  path: x.jsonl\n  system_prompt: "Hi \\ud800"\n',
     r":3: data.system_prompt: invalid Unicode escape \\ud800"),
]


@pytest.mark.parametrize(("name", "content", "expected"), CASES, ids=[c[0] for c in CASES])
def test_malformed_recipe_is_reported_without_traceback(tmp_path, capsys, name, content, expected):
    path = tmp_path / "recipe.yaml"
    path.write_bytes(content)
    assert main(["config", "show", str(path)]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert re.match(re.escape(f"error: {path}") + expected, err), err
    assert all(line.startswith(("error: ", "  - ")) for line in err.strip().splitlines()), err


def test_a_folder_is_not_a_recipe(tmp_path, capsys):
    assert main(["config", "show", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.startswith(f"error: {tmp_path}: is a folder, not a recipe file"), err
