"""Uploaded files on disk: ``<state>/files/<file-id>``, named by a random id and never by the client's name.

The client's filename is kept only as a label in the database (and in error messages, where
``file:line`` should name the file the user knows). The upload is streamed to a temporary name with a
running byte count (``serve.max_file_bytes``), then renamed into place, so a cut upload leaves nothing.
"""

from __future__ import annotations

import os
import re
import secrets
import time
from pathlib import Path
from typing import Any, BinaryIO

FILES = "files"
PURPOSES = ("fine-tune", "fine-tune-results")  # fine-tune-results: written by the server (result_files)
_ID = re.compile(r"file-[0-9a-f]{24}")
CHUNK = 1 << 20


class TooLarge(Exception):
    """The upload passed the size cap."""


def new_id(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(12)}"


def valid_id(file_id: str) -> bool:
    return bool(_ID.fullmatch(file_id))


def path_of(state_dir: Path, file_id: str) -> Path:
    """Only ids this module made map to a path (an id is never a path fragment)."""
    if not valid_id(file_id):
        raise ValueError(f"not a file id: {file_id!r}")
    return state_dir / FILES / file_id


def clean_name(name: str | None) -> str:
    """The client's filename as a label: last path part, printable, at most 200 characters."""
    base = (name or "upload.jsonl").replace("\\", "/").rsplit("/", 1)[-1]
    base = "".join(c for c in base if c.isprintable())[:200]
    return base or "upload.jsonl"


def save(state_dir: Path, source: BinaryIO, limit: int, filename: str | None, purpose: str) -> dict[str, Any]:
    """Copy ``source`` under a fresh id (TooLarge past ``limit`` bytes); returns the OpenAI file object."""
    file_id = new_id("file")
    final = path_of(state_dir, file_id)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(final.name + ".tmp")
    size = 0
    try:
        with open(tmp, "wb") as out:
            while chunk := source.read(CHUNK):
                size += len(chunk)
                if size > limit:
                    raise TooLarge
                out.write(chunk)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, final)
    finally:
        tmp.unlink(missing_ok=True)
    return file_object(file_id, size, clean_name(filename), purpose)


def file_object(file_id: str, size: int, filename: str, purpose: str) -> dict[str, Any]:
    return {"id": file_id, "object": "file", "bytes": size, "created_at": int(time.time()), "filename": filename,
            "purpose": purpose, "status": "processed", "status_details": None}


def write_bytes(state_dir: Path, data: bytes, filename: str, purpose: str) -> dict[str, Any]:
    """A file the server makes itself (a job's result CSV)."""
    import io

    return save(state_dir, io.BytesIO(data), len(data), filename, purpose)
