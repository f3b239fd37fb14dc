"""Fault injection for the atomic-write tests: a full disk, and a record of what reached the disk (fsync).

``disk_full(limit)`` is the kernel's own file-size limit (RLIMIT_FSIZE): inside the block no file can grow
past ``limit`` bytes and a write beyond it fails with EFBIG, exactly where a full disk would fail. A
writer that truncates its target first (``Path.write_text``, ``save_pretrained`` into the final folder)
then leaves a partial file; an atomic one leaves the old file and no temporary.
"""

from __future__ import annotations

import contextlib
import os
import resource
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
from safetensors import SafetensorError

# What a failed write raises: OSError (EFBIG), or safetensors' own error wrapping it.
WRITE_ERRORS = (OSError, SafetensorError)


@contextlib.contextmanager
def disk_full(limit: int) -> Iterator[None]:
    """Files cannot grow past ``limit`` bytes inside the block (writes fail with OSError EFBIG)."""
    previous = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # else the kernel kills the process instead
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, previous)


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` (hidden ones too: a leftover temporary must show) with its bytes."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@contextlib.contextmanager
def fsynced(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Names of the files fsynced inside the block (what a power cut could no longer lose)."""
    names: list[str] = []
    real = os.fsync

    def record(fd: int) -> None:
        with contextlib.suppress(OSError):
            names.append(Path(os.readlink(f"/proc/self/fd/{fd}")).name)
        real(fd)

    monkeypatch.setattr(os, "fsync", record)
    yield names
