"""Atomic writes: a reader (or a resumed run) sees the old file or the new one, never half of one.

Every file is written to a temporary name beside its target, fsynced, renamed over the target, and the
folder is fsynced so the rename itself survives a power cut. Folders are built under a temporary name
and renamed into place the same way. One helper for the whole package: do not hand-roll another.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def _temp_prefix(target: Path) -> str:
    """Temporary names carry the writer's pid, so a later writer can tell a dead writer's leftovers
    (a process killed with SIGKILL runs no cleanup) from a live writer's work in progress."""
    return f".{target.name}.{os.getpid()}."


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def sweep_stale(target: str | Path) -> list[Path]:
    """Remove temporary files and folders beside ``target`` left by writers that are no longer alive."""
    target = Path(target)
    head, removed = f".{target.name}.", []
    try:
        siblings = list(target.parent.iterdir())
    except FileNotFoundError:
        return removed
    for p in siblings:
        # exactly ".<name>.<pid>.<random>.tmp" (mkstemp's random part has no dots), so a target whose
        # own name continues with ".<digits>" is never mistaken for this one
        parts = p.name[len(head):].split(".") if p.name.startswith(head) else []
        if len(parts) != 3 or parts[2] != "tmp" or not parts[0].isdigit() or _pid_alive(int(parts[0])):
            continue
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)
        removed.append(p)
    return removed


def fsync_file(path: str | Path) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def fsync_dir(path: str | Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # some filesystems do not allow opening a folder; the rename is still atomic
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def fsync_tree(path: str | Path) -> None:
    """fsync every file and folder under ``path`` (folders last, so their entries are durable)."""
    root = Path(path)
    for f in sorted(p for p in root.rglob("*") if p.is_file()):
        fsync_file(f)
    for d in sorted((p for p in root.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
        fsync_dir(d)
    fsync_dir(root)


def write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (temporary file in the same folder, fsync, rename)."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    sweep_stale(target)  # a killed writer's half-written file
    fd, tmp = tempfile.mkstemp(prefix=_temp_prefix(target), suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    fsync_dir(target.parent)
    return target


def write_text(path: str | Path, text: str, encoding: str = "utf-8") -> Path:
    return write_bytes(path, text.encode(encoding))


def write_json(path: str | Path, value: Any, **dump_args: Any) -> Path:
    dump_args.setdefault("indent", 2)
    return write_text(path, json.dumps(value, **dump_args) + "\n")


@contextlib.contextmanager
def replace_file(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path to write (by any library); on success it is fsynced and renamed to ``path``.

    For writers that want a file name rather than bytes (``safetensors.save_file``, a GGUF writer).
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    sweep_stale(target)
    fd, name = tempfile.mkstemp(prefix=_temp_prefix(target), suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        fsync_file(tmp)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    fsync_dir(target.parent)


@contextlib.contextmanager
def replace_folder(path: str | Path) -> Iterator[Path]:
    """Yield an empty temporary folder beside ``path``; on success it replaces ``path`` as a whole.

    Every file is fsynced before the rename. An existing ``path`` is moved aside first and deleted only
    after the new folder is in place, so a crash leaves either the old folder or the new one (or, in the
    instant between the two renames, the old one as ``.<name>.old``, which the next call removes); an
    error in that instant moves the old folder back.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    sweep_stale(target)  # a killed writer's half-built folder
    tmp = Path(tempfile.mkdtemp(prefix=_temp_prefix(target), suffix=".tmp", dir=target.parent))
    try:
        yield tmp
        fsync_tree(tmp)
        old = target.with_name(f".{target.name}.old")
        if old.exists():
            shutil.rmtree(old)
        moved = target.exists()
        if moved:
            target.rename(old)
        try:
            tmp.rename(target)
        except BaseException:
            if moved:
                old.rename(target)
            raise
        fsync_dir(target.parent)
        if old.exists():
            shutil.rmtree(old)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
