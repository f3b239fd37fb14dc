"""Reading and writing prepared splits: JSONL, one ``{"messages": [...], "meta": {...}}`` per line.

A prepared folder holds ``train.jsonl``, ``val.jsonl``, ``test.jsonl``, ``quality.json`` and
``splits.json``. ``tuneforge data prepare`` builds it under a temporary name and renames it into place,
``splits.json`` (the manifest) written last, so a folder with a manifest is complete; a folder without
one was made by hand and must hold all three split files (an empty file is an empty split).
:func:`incomplete_reason` is the one check every reuse goes through.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tuneforge.atomic import write_bytes, write_text
from tuneforge.data.example import ChatExample
from tuneforge.data.split import SPLITS
from tuneforge.errors import UserError

MANIFEST = "splits.json"


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


def write_examples(path: Path, examples: list[ChatExample]) -> str:
    """Write a split; returns the SHA-256 of the bytes written."""
    data = "".join(e.dumps() + "\n" for e in examples).encode("utf-8")
    write_bytes(path, data)
    return hashlib.sha256(data).hexdigest()


def write_json(path: Path, value: Any) -> None:
    write_text(path, json.dumps(value, indent=2, ensure_ascii=False) + "\n")


def _count_rows(path: Path) -> int:
    with open(path, "rb") as f:
        return sum(1 for line in f if line.strip())


def _load_manifest(folder: Path) -> tuple[dict[str, Any] | None, str | None]:
    """(manifest, None), (None, None) when there is none, or (None, what is wrong with it)."""
    path = Path(folder) / MANIFEST
    if not path.is_file():
        return None, None
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        return None, f"{MANIFEST} is unreadable ({exc})"
    if not isinstance(manifest, dict) or not isinstance(manifest.get("counts"), dict):
        return None, f"{MANIFEST} is not a prepared-data manifest (no counts)"
    return manifest, None


def incomplete_reason(folder: Path) -> str | None:
    """Why ``folder`` is not a complete prepared folder, or None when it is.

    With a manifest, every split file must exist and hold the number of examples it lists (this also
    catches a folder an older, non-atomic prepare left half rewritten); without one, all three split
    files must exist.
    """
    folder = Path(folder)
    missing = [f"{s}.jsonl" for s in SPLITS if not (folder / f"{s}.jsonl").is_file()]
    manifest, bad = _load_manifest(folder)
    if bad is not None:
        return bad
    if manifest is None:
        return f"{', '.join(missing)} missing and no {MANIFEST}" if missing else None
    if missing:
        return f"{', '.join(missing)} missing although {MANIFEST} lists them"
    for s in SPLITS:
        n, want = _count_rows(folder / f"{s}.jsonl"), manifest["counts"].get(s)
        if n != want:
            return f"{s}.jsonl holds {n} examples but {MANIFEST} lists {want}"
    return None


def require_complete(folder: Path) -> dict[str, Any] | None:
    """The manifest of a complete prepared folder (None if made by hand); UserError when incomplete."""
    reason = incomplete_reason(folder)
    if reason is not None:
        raise UserError(
            f"{folder}: not a complete prepared folder ({reason}); an interrupted `tuneforge data prepare` leaves such a "
            f"folder: prepare the data again (for hand-made or edited splits: keep all three split files, empty ones "
            f"too, and delete {MANIFEST})"
        )
    return _load_manifest(folder)[0]
