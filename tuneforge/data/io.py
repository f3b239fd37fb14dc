"""Reading and writing prepared splits: JSONL, one ``{"messages": [...], "meta": {...}}`` per line."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tuneforge.data.example import Example
from tuneforge.errors import UserError


def check_prepared(record: Any, where: str) -> dict[str, Any]:
    """A prepared example, or UserError naming file:line and the field that is wrong."""
    from tuneforge.data.formats import to_messages
    from tuneforge.data.problems import RowError

    if not isinstance(record, dict):
        raise UserError(f"{where}: (record): expected a JSON object, got {type(record).__name__}")
    try:
        to_messages(record, "chat")
    except RowError as err:
        raise UserError(f"{where}: {err.field}: {err.message}") from None
    meta = record.get("meta")
    if meta is not None and not isinstance(meta, dict):
        raise UserError(f"{where}: meta: expected an object, got {type(meta).__name__}")
    return record


def iter_jsonl(path: str | Path) -> Iterator[tuple[int, Any]]:
    """``(line number, parsed value)`` for every non-blank line of a JSONL file, streamed.

    Invalid JSON, bytes that are not UTF-8 and escapes that are not Unicode (a lone surrogate such as
    ``\\ud800``) are a UserError naming file, line and field; every JSONL reader in tuneforge uses this.
    """
    from tuneforge.data.readers import json_surrogate, not_utf8_problem

    p = Path(path)
    with open(p, "rb") as f:  # decoded line by line, so a bad byte is reported on its own line
        for n, raw in enumerate(f, start=1):
            try:
                line = raw.decode("utf-8-sig" if n == 1 else "utf-8")
            except UnicodeDecodeError as exc:
                raise UserError(f"{p}:{n}: (line): {not_utf8_problem(exc)}") from None
            if not line.strip():
                continue
            try:
                value = json.loads(line)
            except json.JSONDecodeError as exc:
                raise UserError(f"{p}:{n}: (record): invalid JSON ({exc.msg.removesuffix(' at')}, column {exc.colno})") from None
            if (bad := json_surrogate(line, value)) is not None:
                raise UserError(f"{p}:{n}: {bad[0]}: {bad[1]}")
            yield n, value


def read_examples(path: str | Path) -> Iterator[dict[str, Any]]:
    """Every example of a prepared JSONL split, streamed and checked (chat messages ending with the answer)."""
    p = Path(path)
    if not p.is_file():
        raise UserError(f"{p}: prepared split not found (run `tuneforge data prepare` first)")
    for n, record in iter_jsonl(p):
        yield check_prepared(record, f"{p}:{n}")


def write_examples(path: Path, examples: list[Example]) -> str:
    """Write a split; returns the SHA-256 of the bytes written."""
    data = "".join(e.dumps() + "\n" for e in examples).encode("utf-8")
    tmp = path.with_suffix(".jsonl.tmp")
    tmp.write_bytes(data)
    tmp.replace(path)
    return hashlib.sha256(data).hexdigest()


def write_json(path: Path, value: Any) -> None:
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(value, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    tmp.replace(path)
