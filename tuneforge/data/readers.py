"""Streaming readers for JSONL, JSON, CSV/TSV, Parquet and `datasets` save_to_disk folders.

Every reader yields :class:`Row` objects one at a time: a record with its file and line, or a
:class:`Problem` for a row that could not be read (bad encoding, invalid JSON, wrong column count, a
line over the size limit). Rows are never skipped silently; whole-file problems (missing, empty, not
the format its name says) raise :class:`UserError`. Text files are read line by line (gzip, bz2 and xz
are decompressed on the fly), Parquet in record batches and Arrow folders memory-mapped, so no reader
holds a whole file in memory.
"""

from __future__ import annotations

import bz2
import codecs
import csv
import gzip
import json
import lzma
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from tuneforge.data.problems import Problem
from tuneforge.errors import UserError
from tuneforge.unicode import lone_surrogate

# The csv module's field limit is one process-wide setting (default 128 KiB). Readers here never lower
# it (a lowered limit broke every later csv reader in the process, e.g. the bundled drug-review
# unpacking); they raise it once to the largest value and check data.max_line_bytes per field themselves.
CSV_FIELD_LIMIT = min(sys.maxsize, 2**31 - 1)
COMPRESSED = {".gz": gzip.open, ".bz2": bz2.open, ".xz": lzma.open}
# A JSON escape of a UTF-16 surrogate (\ud800-\udfff). A pair decodes to one character; a lone one
# decodes to a string that cannot be encoded as UTF-8 (hashing or writing it fails much later).
SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")
TEXT_KINDS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "json", ".csv": "csv", ".tsv": "tsv"}


@dataclass
class Row:
    file: str
    line: int | None
    record: dict[str, Any] | None = None
    problem: Problem | None = None


def detect_kind(path: Path) -> str:
    """jsonl, json, csv, tsv, parquet or arrow (a save_to_disk folder), from the path."""
    if path.is_dir():
        if any((path / n).is_file() for n in ("dataset_info.json", "dataset_dict.json", "state.json")):
            return "arrow"
        raise UserError(f"{path}: folder is neither a datasets save_to_disk folder nor a prepared data folder")
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] in COMPRESSED:
        suffixes = suffixes[:-1]
    last = suffixes[-1] if suffixes else ""
    if last == ".parquet":
        return "parquet"
    if last in TEXT_KINDS:
        return TEXT_KINDS[last]
    raise UserError(
        f"{path}: unknown file type {last or '(no extension)'!r}; use .jsonl, .json, .csv, .tsv, .parquet "
        "(optionally .gz/.bz2/.xz) or a datasets save_to_disk folder"
    )


def _open_binary(path: Path) -> IO[bytes]:
    opener = COMPRESSED.get(path.suffix.lower())
    try:
        return opener(path, "rb") if opener else open(path, "rb")  # type: ignore[return-value]
    except OSError as exc:
        raise UserError(f"{path}: cannot open ({exc.strerror or exc})") from None


def _raw_lines(path: Path, limit: int) -> Iterator[tuple[int, bytes | None, str | None]]:
    """(line number, bytes, None) per line, or (line number, None, problem text) for an over-long line."""
    with _open_binary(path) as f:
        n = 0
        while True:
            try:
                chunk = f.readline(limit + 1)
            except (OSError, EOFError, lzma.LZMAError) as exc:
                raise UserError(f"{path}:{n + 1}: (file): cannot decompress or read ({exc})") from None
            if not chunk:
                return
            n += 1
            if len(chunk) > limit and not chunk.endswith(b"\n"):
                size = len(chunk)
                while chunk and not chunk.endswith(b"\n"):  # skip the rest of the line without keeping it
                    chunk = f.readline(1 << 20)
                    size += len(chunk)
                yield n, None, f"line is {size} bytes, over the limit of {limit} (data.max_line_bytes)"
                continue
            yield n, chunk, None


def json_surrogate(text: str, value: Any) -> tuple[str, str] | None:
    """Like :func:`lone_surrogate`, looking only when ``text`` (the JSON source) has a surrogate escape."""
    return lone_surrogate(value) if SURROGATE_ESCAPE.search(text) else None


def _decode(raw: bytes, first: bool) -> str:
    if first and raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]
    return raw.decode("utf-8")


def not_utf8_problem(exc: UnicodeDecodeError) -> str:
    return f"not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at column {exc.start + 1}); re-save the file as UTF-8"


def read_jsonl(path: Path, limit: int) -> Iterator[Row]:
    name = str(path)
    seen = False
    for n, raw, too_long in _raw_lines(path, limit):
        if too_long:
            seen = True
            yield Row(name, n, problem=Problem("malformed", name, n, "(line)", too_long))
            continue
        assert raw is not None
        try:
            text = _decode(raw, n == 1)
        except UnicodeDecodeError as exc:
            seen = True
            yield Row(name, n, problem=Problem("malformed", name, n, "(line)", not_utf8_problem(exc)))
            continue
        if not text.strip():
            continue
        seen = True
        try:
            value = json.loads(text)
        except json.JSONDecodeError as exc:
            msg = f"invalid JSON ({exc.msg.removesuffix(' at')}, column {exc.colno})"
            yield Row(name, n, problem=Problem("malformed", name, n, "(record)", msg))
            continue
        if not isinstance(value, dict):
            msg = f"expected a JSON object per line, got {type(value).__name__}"
            yield Row(name, n, problem=Problem("malformed", name, n, "(record)", msg))
            continue
        if (bad := json_surrogate(text, value)) is not None:
            yield Row(name, n, problem=Problem("malformed", name, n, *bad))
            continue
        yield Row(name, n, record=value)
    if not seen:
        raise UserError(f"{path}:1: (file): the file is empty; it holds no records")


def read_json(path: Path, limit: int) -> Iterator[Row]:
    """A JSON array of objects, streamed object by object with ``raw_decode`` (line numbers kept)."""
    name = str(path)
    decoder = json.JSONDecoder()
    with _open_binary(path) as f:
        buf, pos, pending, eof = _refill(f, "", 0, codecs.getincrementaldecoder("utf-8")(), path, 1)
        while not eof and not buf.strip():
            buf, pos, pending, eof = _refill(f, buf, pos, pending, path, 1)
        buf = buf.lstrip("\ufeff")
        stripped = buf.lstrip()
        if not stripped:
            raise UserError(f"{path}:1: (file): the file is empty; it holds no records")
        line = 1 + buf[: len(buf) - len(stripped)].count("\n")
        if stripped[0] == "{":
            raise UserError(
                f"{path}:{line}: (file): a .json file must hold an array of records ([{{...}}, ...]); "
                "for one record per line name the file .jsonl"
            )
        if stripped[0] != "[":
            raise UserError(f"{path}:{line}: (file): not a JSON array (starts with {stripped[0]!r})")
        pos = len(buf) - len(stripped) + 1
        line_at = 1 + buf[:pos].count("\n")
        count = 0
        while True:
            # Skip whitespace and the comma between records.
            while True:
                while pos < len(buf) and buf[pos] in " \t\r\n,":
                    if buf[pos] == "\n":
                        line_at += 1
                    pos += 1
                if pos < len(buf) or eof:
                    break
                buf, pos, pending, eof = _refill(f, buf, pos, pending, path, line_at)
            if pos >= len(buf):
                raise UserError(f"{path}:{line_at}: (file): truncated JSON: the array is never closed with ']'")
            if buf[pos] == "]":
                break
            try:
                value, end = decoder.raw_decode(buf, pos)
            except json.JSONDecodeError as exc:
                if not eof and len(buf) - pos < limit:
                    buf, pos, pending, eof = _refill(f, buf, pos, pending, path, line_at)
                    continue
                bad_line = line_at + buf[pos : exc.pos].count("\n")
                what = "truncated JSON" if exc.pos >= len(buf) - 1 else "invalid JSON"
                raise UserError(f"{path}:{bad_line}: (record): {what} ({exc.msg.removesuffix(' at')})") from None
            count += 1
            if isinstance(value, dict) and (bad := json_surrogate(buf[pos:end], value)) is not None:
                yield Row(name, line_at, problem=Problem("malformed", name, line_at, *bad))
            elif isinstance(value, dict):
                yield Row(name, line_at, record=value)
            else:
                msg = f"expected a JSON object in the array, got {type(value).__name__}"
                yield Row(name, line_at, problem=Problem("malformed", name, line_at, "(record)", msg))
            line_at += buf[pos:end].count("\n")
            pos = end
        if count == 0:
            raise UserError(f"{path}:{line_at}: (file): the JSON array is empty; it holds no records")


def _refill(f: IO[bytes], buf: str, pos: int, dec: Any, path: Path, line_at: int) -> tuple[str, int, Any, bool]:
    """Append the next megabyte of decoded text to the unread part of ``buf``."""
    chunk = f.read(1 << 20)
    try:
        text = dec.decode(chunk, final=not chunk)
    except UnicodeDecodeError as exc:
        line = line_at + buf[pos:].count("\n") + bytes(exc.object[: exc.start]).count(b"\n")
        raise UserError(f"{path}:{line}: (record): {not_utf8_problem(exc)}") from None
    return buf[pos:] + text, 0, dec, not chunk


def allow_long_csv_fields() -> None:
    """Raise the process-wide csv field limit to its maximum (never lower it: other readers share it)."""
    if csv.field_size_limit() < CSV_FIELD_LIMIT:
        csv.field_size_limit(CSV_FIELD_LIMIT)


def _over_limit(header: list[str], values: list[str], limit: int) -> tuple[str, str] | None:
    """(column, problem) for the first field over ``limit`` bytes (a quoted field can span many lines)."""
    for i, v in enumerate(values):
        if len(v) * 4 > limit and (size := len(v.encode("utf-8", "surrogatepass"))) > limit:
            column = header[i] if i < len(header) and header[i] else f"(column {i + 1})"
            return column, f"field is {size} bytes, over the limit of {limit} (data.max_line_bytes)"
    return None


def read_csv(path: Path, limit: int, delimiter: str = ",") -> Iterator[Row]:
    name = str(path)
    bad_lines: dict[int, str] = {}

    def lines() -> Iterator[str]:
        for n, raw, too_long in _raw_lines(path, limit):
            if too_long:
                bad_lines[n] = too_long
                yield "\n"
                continue
            assert raw is not None
            try:
                yield _decode(raw, n == 1)
            except UnicodeDecodeError as exc:
                bad_lines[n] = not_utf8_problem(exc)
                yield raw.decode("utf-8", errors="replace")

    allow_long_csv_fields()
    reader = csv.reader(lines(), delimiter=delimiter)
    try:
        header = next(reader)
    except StopIteration:
        raise UserError(f"{path}:1: (file): the file is empty; it has no header row") from None
    except csv.Error as exc:
        raise UserError(f"{path}:1: (header): unreadable CSV header ({exc})") from None
    if 1 in bad_lines:
        raise UserError(f"{path}:1: (header): {bad_lines[1]}")
    header = [h.strip() for h in header]
    if not any(header):
        raise UserError(f"{path}:1: (header): the first line must name the columns")
    dupes = sorted({h for h in header if header.count(h) > 1 and h})
    if dupes:
        raise UserError(f"{path}:1: {dupes[0]}: column name appears more than once in the header")
    prev = reader.line_num
    seen = False
    while True:
        start = prev + 1
        try:
            values = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            prev = reader.line_num
            seen = True
            yield Row(name, start, problem=Problem("malformed", name, start, "(row)", f"unreadable CSV row ({exc})"))
            continue
        prev = reader.line_num
        bad = next((bad_lines[i] for i in range(start, prev + 1) if i in bad_lines), None)
        if bad:
            seen = True
            yield Row(name, start, problem=Problem("malformed", name, start, "(line)", bad))
            continue
        if not values or (len(values) == 1 and not values[0].strip() and len(header) > 1):
            continue  # a blank line is not a record
        seen = True
        if too_big := _over_limit(header, values, limit):
            yield Row(name, start, problem=Problem("malformed", name, start, *too_big))
            continue
        if len(values) != len(header):
            msg = f"expected {len(header)} columns ({delimiter.join(header)}), got {len(values)}"
            yield Row(name, start, problem=Problem("malformed", name, start, "(row)", msg))
            continue
        yield Row(name, start, record=dict(zip(header, values, strict=True)))
    if not seen:
        raise UserError(f"{path}:2: (file): the file has a header but no data rows")


def read_parquet(path: Path) -> Iterator[Row]:
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
    except Exception as exc:  # pyarrow raises several types for a bad file
        raise UserError(f"{path}: (file): not a readable Parquet file ({exc})") from None
    if pf.metadata.num_rows == 0:
        raise UserError(f"{path}:1: (file): the Parquet file has no rows")
    n = 0
    for batch in pf.iter_batches(batch_size=1024):
        for record in batch.to_pylist():
            n += 1
            yield Row(str(path), n, record=record)


def read_arrow_folder(path: Path, split: str | None) -> Iterator[Row]:
    from datasets import DatasetDict, load_from_disk

    try:
        ds = load_from_disk(str(path))  # memory-mapped Arrow
    except Exception as exc:
        raise UserError(f"{path}: (file): not a readable datasets save_to_disk folder ({exc})") from None
    if isinstance(ds, DatasetDict):
        names = list(ds.keys())
        chosen = split or ("train" if "train" in names else names[0] if len(names) == 1 else None)
        if chosen not in names:
            raise UserError(f"{path}: data.split: choose one of the splits {names} (e.g. --set data.split=train)")
        ds = ds[chosen]
    if len(ds) == 0:
        raise UserError(f"{path}:1: (file): the dataset has no rows")
    for n, record in enumerate(ds, start=1):
        yield Row(str(path), n, record=dict(record))


def read_rows(path: str | Path, max_line_bytes: int = 8_000_000, split: str | None = None) -> Iterator[Row]:
    """Every row of a raw data file or folder, streamed."""
    p = Path(path)
    if not p.exists():
        raise UserError(f"{p}: no such file or folder (data.path)")
    kind = detect_kind(p)
    if kind == "jsonl":
        return read_jsonl(p, max_line_bytes)
    if kind == "json":
        return read_json(p, max_line_bytes)
    if kind in ("csv", "tsv"):
        return read_csv(p, max_line_bytes, "\t" if kind == "tsv" else ",")
    if kind == "parquet":
        return read_parquet(p)
    return read_arrow_folder(p, split)
