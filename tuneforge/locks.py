"""One process at a time: a lock file that names its holder, for run folders and RAG indexes.

The lock is ``fcntl.flock`` on a file that also records the holder's pid, host and command, so the
second process can say who holds it. The kernel drops a flock when its process dies (kill -9 included),
so a stale lock of a dead process is taken over without anyone cleaning up.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from tuneforge.errors import UserError
from tuneforge.secrets import redact_text

LOCK_NAME = ".lock"


def _holder(path: Path) -> str:
    try:
        info = json.loads(path.read_text(encoding="utf-8") or "{}")
    except (OSError, ValueError):
        return "another process"
    pid = info.get("pid", "?")
    what = info.get("command", "")
    return f"pid {pid} on {info.get('host', '?')}" + (f" ({what})" if what else "")


@contextlib.contextmanager
def hold(folder: str | Path, what: str, wait_s: float = 0.0, name: str = LOCK_NAME) -> Iterator[Path]:
    """Hold ``folder/<name>`` for the duration of the block.

    ``wait_s`` = 0 refuses at once when another live process holds the lock; otherwise this waits up to
    ``wait_s`` seconds (printing once that it waits) and then refuses. Refusals are ``UserError``s that
    name the holder. Re-entrant within one process is not supported: take the lock once, high up.
    """
    root = Path(folder)
    root.mkdir(parents=True, exist_ok=True)
    path = root / name
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    deadline = time.monotonic() + wait_s
    told = False
    acquired = False
    try:
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                acquired = True
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise UserError(
                        f"{root}: {what} is in use by {_holder(path)}; wait for it to finish "
                        f"(or stop it) and try again"
                    ) from None
                if not told:
                    print(f"{root}: waiting for {_holder(path)} to release it ...", file=sys.stderr)
                    told = True
                time.sleep(0.2)
        info = {"pid": os.getpid(), "host": socket.gethostname(), "command": redact_text(" ".join(sys.argv[:3]))}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(info).encode(), 0)
        yield path
    finally:
        if acquired:  # a refused process must not wipe the holder's name from the file
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)
        os.close(fd)  # closing releases the flock
