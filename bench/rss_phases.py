"""Peak RSS per phase of a command (the quickstart by default): where its memory goes.

The command runs as a child; a sampler reads the RSS of its whole process tree every 0.25 s and each
stdout line that marks a phase (stage headers, the memory plan, validation losses, every evaluation row)
closes the phase before it. A phase is named by the line that ended it, so "base zero-shot sentiment"
is the memory while that row was computed. The child's stdout is passed through.

    python -m bench.rss_phases                                   # the full quickstart
    python -m bench.rss_phases -- quickstart --examples 120 --set train.max_steps=2
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

MARKER = re.compile(r"^(== |memory plan:|stage \d+/\d+ |step \d+: validation loss|evaluating |  \S.{15} \S|report:|output:|done:)")


def _children(pid: int) -> list[int]:
    try:
        return [int(x) for x in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def tree_rss_kb(pid: int) -> int:
    """Resident set of ``pid`` and all its descendants, in KiB (0 once it is gone)."""
    own = 0
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                own = int(line.split()[1])
    except OSError:
        return 0
    return own + sum(tree_rss_kb(c) for c in _children(pid))


@dataclass
class Phase:
    label: str
    start: float
    end: float = 0.0
    peak_kb: int = 0


def run(cmd: list[str], interval: float = 0.25) -> tuple[list[Phase], int]:
    """Run ``cmd``; its phases (named by the marker line that ended each) and its exit status."""
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=None, text=True, bufsize=1)
    phases = [Phase("start", 0.0)]
    lock, done = threading.Lock(), threading.Event()

    def sample() -> None:
        while not done.is_set():
            kb = tree_rss_kb(proc.pid)
            with lock:
                phases[-1].peak_kb = max(phases[-1].peak_kb, kb)
            done.wait(interval)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    assert proc.stdout is not None
    for line in proc.stdout:
        sys.stdout.write(line)
        if MARKER.match(line):
            now = time.monotonic() - t0
            with lock:
                phases[-1].end, phases[-1].label = now, line.strip()[:70]
                phases.append(Phase("(after the last marker)", now, peak_kb=tree_rss_kb(proc.pid)))
    rc = proc.wait()
    done.set()
    sampler.join()
    phases[-1].end = time.monotonic() - t0
    return phases, rc


def table(phases: list[Phase]) -> str:
    rows = ["| phase (ended by) | from s | to s | peak RSS GB (10^6 kB, as GNU time) |", "|---|---:|---:|---:|"]
    rows += [f"| {p.label} | {p.start:.0f} | {p.end:.0f} | {p.peak_kb / 1e6:.2f} |" for p in phases]
    rows.append(f"| **whole run** | 0 | {phases[-1].end:.0f} | **{max(p.peak_kb for p in phases) / 1e6:.2f}** |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help="Also write the table (markdown) here.")
    parser.add_argument("args", nargs="*", help="tuneforge arguments (default: quickstart)")
    ns = parser.parse_args(argv)
    cmd = [sys.executable, "-m", "tuneforge.cli.main", *(ns.args or ["quickstart"])]
    phases, rc = run(cmd)
    text = table(phases)
    print("\n" + text)
    if ns.out:
        ns.out.write_text(text + "\n")
    return rc


if __name__ == "__main__":
    raise SystemExit(main())
