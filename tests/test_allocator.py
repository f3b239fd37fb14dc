"""The `tuneforge` command restarts itself on TCMalloc (else jemalloc) where the system has one."""

from __future__ import annotations

import os
import subprocess
import sys

from tuneforge import allocator

# Calls what `tuneforge`'s main() calls first, then reports on the process it ended up in.
PROBE = """
import os
from tuneforge.allocator import active, restart_with_allocator
restart_with_allocator()
print(active(), os.getpid(), repr(os.environ.get("LD_PRELOAD")), flush=True)
"""


def _probe(**env: str) -> list[str]:
    """(allocator, pid, repr of LD_PRELOAD) as the probe's final process saw them."""
    base = {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", allocator.ENV)}
    proc = subprocess.Popen([sys.executable, "-c", PROBE], env={**base, **env}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0
    name, pid, preload = out.strip().split(maxsplit=2)
    assert int(pid) == proc.pid  # a restart keeps the process (what a parent waits for or signals)
    return [name, pid, preload]


def _expected() -> str:
    """The allocator `auto` should end up on: scripts/install.sh installs TCMalloc where it can; without a
    library the process stays on glibc's malloc."""
    return next(iter(allocator.available()), "system")


def test_the_command_runs_on_the_fast_allocator_where_there_is_one_and_leaves_the_callers_preload_alone():
    name, _, preload = _probe()
    assert name == _expected()
    assert preload == "None"  # programs the command starts get the environment the caller gave it
    libm = "libm.so.6"  # a harmless preload of the caller's: kept beside ours, and put back for the children
    name, _, preload = _probe(LD_PRELOAD=libm)
    assert name == _expected() and preload == repr(libm)


def test_system_means_glibc_and_no_restart():
    name, _, preload = _probe(TUNEFORGE_ALLOCATOR="system")
    assert name == "system" and preload == "None"


def test_a_named_library_is_used_and_a_missing_one_is_ignored(tmp_path):
    assert allocator.find(str(tmp_path / "nope.so")) is None
    assert allocator.find("system") is None
    library = allocator.find("auto")
    if library is not None:  # the restart also takes a library named by path
        name, _, _ = _probe(TUNEFORGE_ALLOCATOR=str(library))
        assert name != "system"
    name, _, _ = _probe(TUNEFORGE_ALLOCATOR=str(tmp_path / "nope.so"))
    assert name == "system"


def test_a_preload_that_does_not_take_is_not_retried_forever(tmp_path):
    fake = tmp_path / "libnotanallocator.so"
    fake.write_bytes(b"not a shared library")  # ld.so warns and starts without it: one restart, no loop
    name, _, preload = _probe(TUNEFORGE_ALLOCATOR=str(fake))
    assert name == "system" and preload == "None"


def test_the_version_line_says_which_allocator_runs():
    for choice, expected in (("system", "system"), ("auto", _expected())):
        out = subprocess.run([sys.executable, "-m", "tuneforge.cli.main", "--version"], capture_output=True,
                             text=True, timeout=120, check=True, env={**os.environ, allocator.ENV: choice})
        assert out.stdout.strip().endswith(f"(allocator: {expected})")
