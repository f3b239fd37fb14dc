"""Every malformed input gets one clear error line naming file, line and field; nothing is skipped silently."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.data.malformed_corpus import Case, cases
from tuneforge.cli.main import main
from tuneforge.config.data import DataConfig
from tuneforge.data.prepare import prepare_data
from tuneforge.errors import UserError

CASES = cases()


def _where(path: Path, case: Case) -> str:
    return f"{path}:{case.line}: {case.field}: " if case.line is not None else f"{path}: {case.field}: "


def _write(tmp_path: Path, case: Case) -> Path:
    path = tmp_path / case.filename
    path.write_bytes(case.content)
    return path


def test_corpus_is_large_and_varied():
    assert len(CASES) >= 30
    kinds = {Path(c.filename).suffixes[0] for c in CASES}
    assert {".jsonl", ".json", ".csv", ".tsv", ".parquet"} <= kinds


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_strict_fails_with_one_located_line(tmp_path, case):
    path = _write(tmp_path, case)
    cfg = DataConfig(path=str(path), strict=True, **case.cfg)
    with pytest.raises(UserError) as info:
        prepare_data(cfg, tmp_path / "out")
    text = info.value.render()
    where = _where(path, case)
    assert text.count(where) == 1, text
    line = next(ln for ln in text.splitlines() if where in ln)
    assert len(line.split(where, 1)[1].strip()) > 5  # says what is wrong, not just where
    assert not (tmp_path / "out" / "train.jsonl").exists()


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_lenient_mode_reports_and_counts_every_bad_row(tmp_path, case):
    path = _write(tmp_path, case)
    cfg = DataConfig(path=str(path), **case.cfg)
    try:
        prepared = prepare_data(cfg, tmp_path / "out")
    except UserError as err:  # a file-level problem, or no usable row left: still located
        assert _where(path, case) in err.render()
        return
    report = prepared.report
    assert any(p.startswith(_where(path, case)) for p in report["problems"]), report["problems"]
    counts = report["counts"]
    assert counts["rows"] == counts["kept"] + sum(report["dropped"].values())
    saved = json.loads((tmp_path / "out" / "quality.json").read_text())
    assert saved["problems"] == report["problems"]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_cli_prints_the_line_without_traceback(tmp_path, case, capsys):
    path = _write(tmp_path, case)
    args = ["data", "prepare", "--input", str(path), "--out", str(tmp_path / "out"), "--strict", "--no-tokenizer"]
    for key, value in case.cfg.items():
        args += ["--set", f"data.{key}={json.dumps(value)}"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert err.startswith("error: ")
    assert _where(path, case) in err


def _cli_error(capsys, args: list[str]) -> str:
    """Run the CLI; it must exit 2 with one `error:` message and no traceback (without --verbose)."""
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.startswith("error: "), err
    return err


# User template files: (name, file bytes, what the error line names after the path)
BAD_TEMPLATES = [
    ("invalid YAML", b"prompt: 'Review: {{ text }}\nresponse: {{ label }}\n", ":3: invalid YAML"),
    ("tab indentation", b"prompt: x\n\tresponse: y\n", ":2: invalid YAML"),
    ("not a mapping", b"- prompt\n- response\n", ": a user template needs"),
    ("missing response", b"prompt: 'Review: {{ text }}'\n", ": a user template needs"),
    ("response is a list", b"prompt: 'Review: {{ text }}'\nresponse: [a]\n", ": a user template needs"),
    ("Jinja syntax error", b"prompt: 'Review: {{ text }'\nresponse: '{{ label }}'\n", ":1: Jinja2 syntax error"),
    ("label_set is a string", b"prompt: '{{ text }}'\nresponse: '{{ label }}'\nlabel_set: positive\n", ":3: label_set: "),
    ("example is a number", b"prompt: '{{ text }}'\nresponse: '{{ label }}'\nexample: 5\n", ":3: example: "),
    ("duplicate key", b"prompt: '{{ text }}'\nresponse: '{{ label }}'\nprompt: 'Other {{ text }}'\n", ":3: invalid YAML: dup"),
    ("binary file", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\xff\xfe", ": not UTF-8 text"),
    ("NUL byte", b"prompt: '{{ text }}'\x00\nresponse: '{{ label }}'\n", ":1: invalid YAML"),
]


@pytest.mark.parametrize(("name", "content", "where"), BAD_TEMPLATES, ids=[c[0] for c in BAD_TEMPLATES])
def test_bad_user_template_is_one_error_line(tmp_path, capsys, name, content, where):
    data = tmp_path / "d.jsonl"
    data.write_text(json.dumps({"text": "Great film.", "label": "positive"}) + "\n")
    template = tmp_path / "mine.yaml"
    template.write_bytes(content)
    err = _cli_error(capsys, ["data", "prepare", "--input", str(data), "--template", str(template),
                              "--out", str(tmp_path / "out"), "--no-tokenizer"])
    assert err.startswith(f"error: {template}{where}"), err
    assert len(err.strip().splitlines()) == 1, err


def test_corrupt_datasets_folder_is_one_error_line(tmp_path, capsys):
    folder = tmp_path / "arrow"
    folder.mkdir()
    (folder / "dataset_info.json").write_text("{not json")
    (folder / "state.json").write_text('{"_data_files": [{"filename": "data-00000-of-00001.arrow"}]}')
    (folder / "data-00000-of-00001.arrow").write_bytes(b"not arrow at all")
    err = _cli_error(capsys, ["data", "prepare", "--input", str(folder), "--template", "sentiment",
                              "--out", str(tmp_path / "out"), "--no-tokenizer"])
    assert err.startswith(f"error: {folder}: (file): not a readable datasets save_to_disk folder"), err
    assert len(err.strip().splitlines()) == 1, err
