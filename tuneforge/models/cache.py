"""The on-disk cache of converted models.

GGUF files (the bundled default ships as one) are dequantised once into a standard safetensors folder
under the cache; every later load reads that folder. Each converted folder has a ``checksums.json``
with the SHA-256 of every file, verified on load, and is written to a temporary name and renamed into
place so an interrupted conversion is never mistaken for a finished one.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
from collections.abc import Iterator
from pathlib import Path

from tuneforge import locks
from tuneforge.errors import UserError

CACHE_ENV = "TUNEFORGE_CACHE"
CHECKSUMS = "checksums.json"
VERIFIED = ".verified.json"  # stamp of the last full verification


def cache_root() -> Path:
    """$TUNEFORGE_CACHE, else $XDG_CACHE_HOME/tuneforge, else ~/.cache/tuneforge."""
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "tuneforge"


def sha256_file(path: Path, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def write_checksums(folder: Path) -> None:
    sums = {p.name: sha256_file(p) for p in sorted(folder.iterdir()) if p.is_file() and p.name not in (CHECKSUMS, VERIFIED)}
    (folder / CHECKSUMS).write_text(json.dumps(sums, indent=1, sort_keys=True))


def _stat_stamp(folder: Path, names: list[str]) -> dict[str, list[int]]:
    stamp = {}
    for name in names:
        st = (folder / name).stat()
        stamp[name] = [st.st_size, st.st_mtime_ns, st.st_ino]
    return stamp


def verify_checksums(folder: Path) -> None:
    """Raise UserError naming the first file whose content no longer matches its recorded hash.

    Hashing 540 MB on every load would cost seconds, so a full SHA-256 pass is made once and its result
    stamped with each file's size, mtime and inode; later loads re-hash only when a stamp changed (any
    write to a file changes its mtime).
    """
    record = folder / CHECKSUMS
    if not record.is_file():
        raise UserError(f"{folder}: cached model has no {CHECKSUMS}; delete the folder to rebuild it")
    sums = json.loads(record.read_text())
    missing = [name for name in sums if not (folder / name).is_file()]
    if missing:
        raise UserError(f"{folder / missing[0]}: cached file is missing; delete {folder} to rebuild it")
    stamp = _stat_stamp(folder, list(sums))
    verified = folder / VERIFIED
    try:
        if json.loads(verified.read_text()) == {"checksums": sums, "stamp": stamp}:
            return
    except (OSError, ValueError):
        pass
    for name, digest in sums.items():
        if sha256_file(folder / name) != digest:
            verified.unlink(missing_ok=True)
            raise UserError(
                f"{folder / name}: cached file is corrupted (checksum mismatch); delete {folder} to rebuild it"
            )
    with contextlib.suppress(OSError):  # a read-only cache still works, it just re-hashes next time
        verified.write_text(json.dumps({"checksums": sums, "stamp": stamp}))


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """An exclusive lock so that parallel processes convert a model (or unpack a dataset) only once: the
    second one waits, saying for whom, until the first is done."""
    with locks.hold(path.parent, f"the cache entry {path.stem}", wait_s=math.inf, name=path.name):
        yield
