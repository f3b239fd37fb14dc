"""A faster memory allocator for the `tuneforge` command: TCMalloc (else jemalloc) in place of glibc's malloc.

Why: a training step allocates and frees thousands of tensors, from a few KB to tens of MB, in sizes that
change step by step. glibc's malloc serves the large ones from fresh ``mmap`` regions or from the top of
its heap, hands them back when they are freed and page-faults them in again on the next step; TCMalloc
and jemalloc keep such blocks for reuse. Measured on the bench's LoRA step (SmolLM2-135M, bfloat16 base,
2 threads, 16 steps, a fresh process per run, allocators alternated, two rounds; BENCHMARKS.md, "The
allocator"): glibc 259-278 tokens/s at a 1,241-1,247 MB peak, TCMalloc 306-350 at 1,189-1,210 MB,
jemalloc 277-322 at 1,157-1,160 MB, the same losses. Serving steps are 2-5% quicker with TCMalloc.

An allocator has to be in place before the process's first ``malloc``, so the `tuneforge` command starts
itself again, once, with the library in ``LD_PRELOAD`` (what PyTorch's CPU performance guide advises and
Intel's ``ipexrun`` launcher does); the new process puts the caller's ``LD_PRELOAD`` back, so the programs
it starts (a database, a browser) get the environment they were given. Code using the Python API runs in
its caller's process: start Python with ``LD_PRELOAD=$(python -m tuneforge.allocator)`` for the same gain.

``TUNEFORGE_ALLOCATOR``: ``auto`` (default: TCMalloc, else jemalloc, where the system has one; Debian and
Ubuntu: ``apt-get install libtcmalloc-minimal4``, which ``scripts/install.sh`` does), ``system`` (glibc's
malloc, no restart), or the path of an allocator library. Linux only; elsewhere nothing changes.
"""

from __future__ import annotations

import functools
import os
import sys
from pathlib import Path

ENV = "TUNEFORGE_ALLOCATOR"
_MARK = "TUNEFORGE_ALLOCATOR_PID"  # the pid that restarted itself (an exec keeps it): never twice
_CALLER_PRELOAD = "TUNEFORGE_CALLER_LD_PRELOAD"  # LD_PRELOAD as the caller set it, put back after the restart
# (name, file names) in order of preference: TCMalloc was the quickest in the measurement above.
LIBRARIES = (
    ("tcmalloc", ("libtcmalloc_minimal.so.4", "libtcmalloc.so.4")),
    ("jemalloc", ("libjemalloc.so.2",)),
)
SEARCH_DIRS = ("/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/usr/lib64", "/usr/lib",
               "/usr/local/lib", "/lib/x86_64-linux-gnu", "/lib/aarch64-linux-gnu")
KNOWN = ("tcmalloc", "jemalloc", "mimalloc")


def available() -> dict[str, Path]:
    """name -> library file of every allocator in :data:`LIBRARIES` this system has, in order of preference."""
    found = {}
    for name, files in LIBRARIES:
        path = next((Path(d) / f for d in SEARCH_DIRS for f in files if (Path(d) / f).is_file()), None)
        if path is not None:
            found[name] = path
    return found


def find(choice: str | None = None) -> Path | None:
    """The allocator library ``choice`` (default: ``$TUNEFORGE_ALLOCATOR``, else ``auto``: the first of
    :func:`available`) names, or None."""
    choice = choice or os.environ.get(ENV, "auto")
    if choice == "system":
        return None
    if choice != "auto":
        path = Path(choice).expanduser()
        return path if path.is_file() else None
    return next(iter(available().values()), None)


@functools.cache  # fixed when the process starts; the memory planner asks for every plan it weighs
def active() -> str:
    """The allocator this process runs on: ``tcmalloc``, ``jemalloc``, ``mimalloc`` or ``system``."""
    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError:
        return "system"
    return next((name for name in KNOWN if f"lib{name}" in maps), "system")


def preload_env(library: Path, caller: str = "") -> dict[str, str]:
    """The environment variables that start a process on ``library`` (before the ``caller``'s own preloads)."""
    # TCMalloc reports every allocation over 1 GB on stderr (a Gemma 3 vocabulary's logits reach that)
    return {"LD_PRELOAD": f"{library} {caller}".strip(),
            "TCMALLOC_LARGE_ALLOC_REPORT_THRESHOLD": os.environ.get("TCMALLOC_LARGE_ALLOC_REPORT_THRESHOLD",
                                                                   str(1 << 62))}


def restart_with_allocator() -> None:
    """Start this command again with :func:`find`'s library preloaded; returns where that is not wanted,
    not possible or already done (then it puts the caller's ``LD_PRELOAD`` back for the programs we start)."""
    if _CALLER_PRELOAD in os.environ:  # we are the restarted process
        caller = os.environ.pop(_CALLER_PRELOAD)
        if caller:
            os.environ["LD_PRELOAD"] = caller
        else:
            os.environ.pop("LD_PRELOAD", None)
    if not sys.platform.startswith("linux") or os.environ.get(_MARK) == str(os.getpid()):
        return
    if active() != "system":
        return
    library = find()
    if library is None:
        return
    caller = os.environ.get("LD_PRELOAD", "")
    env = {**os.environ, **preload_env(library, caller), _CALLER_PRELOAD: caller, _MARK: str(os.getpid())}
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]], env)
    except OSError:  # could not start again: go on with glibc's malloc
        return


def release_free_memory() -> bool:
    """Hand memory the allocator keeps for reuse back to the system (TCMalloc, jemalloc), as training ends;
    False where this process runs on another allocator (glibc: ``malloc_trim``, see
    ``train.memory.return_freed_memory``).

    TCMalloc also switches to giving every freed span back at once from then on ("aggressive decommit"):
    what runs after training (evaluation, export) allocates other sizes than training did, and with the
    freed spans kept its peak rose above training's (the bench's LoRA worker, bf16, 40 steps: training
    1,246 MB, with its evaluator 1,296; decommitting, 1,250 and 1,250; glibc after ``malloc_trim`` 1,292
    and 1,292). Training itself keeps TCMalloc's caching, where the speed comes from."""
    import ctypes

    try:
        process = ctypes.CDLL(None)
    except (OSError, TypeError):  # TypeError: Windows cannot open "the process itself"
        return False
    release = getattr(process, "MallocExtension_ReleaseFreeMemory", None)  # TCMalloc
    if release is not None:
        set_property = getattr(process, "MallocExtension_SetNumericProperty", None)
        if set_property is not None:
            set_property(b"tcmalloc.aggressive_memory_decommit", ctypes.c_size_t(1))
        release()
        return True
    mallctl = getattr(process, "mallctl", None)  # jemalloc: purge every arena
    if mallctl is not None and active() == "jemalloc":
        mallctl(b"arena.4096.purge", None, None, None, ctypes.c_size_t(0))  # 4096: MALLCTL_ARENAS_ALL
        return True
    return False


if __name__ == "__main__":  # `LD_PRELOAD=$(python -m tuneforge.allocator) python my_script.py`
    found = find()
    print(found or "", end="\n" if found else "")
    sys.exit(0 if found else 1)
