"""The quickstart's training tokens/s and peak RSS at two checkouts, alternated in one run.

Issue 15 asks that the memory work keep the quickstart's tokens/s at >= 0.95x of what it was before.
Each round runs `tuneforge quickstart` once per checkout, in a fresh process with that checkout first on
PYTHONPATH (same interpreter, same installed libraries, same data and model cache), and stops it as soon
as the training stage prints its summary (``... N tokens/s``): evaluation is the same code's concern, not
this figure's. The order alternates each round so that a drifting machine load favours neither side.

    git worktree add /tmp/before <commit>
    python -m bench.quickstart_ab --before /tmp/before --rounds 2
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from bench.rss_phases import tree_rss_kb

SUMMARY = re.compile(r"val loss (\S+) -> (\S+), (\d+(?:\.\d+)?) tokens/s")


@dataclass
class Trial:
    label: str
    tokens_per_s: float
    val_loss: str
    peak_kb: int
    wall_s: float


def run_once(label: str, checkout: Path, extra: list[str]) -> Trial:
    """One quickstart up to the end of training at ``checkout``; killed once training has reported."""
    env = dict(os.environ, PYTHONPATH=str(checkout))
    with tempfile.TemporaryDirectory(prefix=f"qs-{label}-") as out:
        cmd = [sys.executable, "-m", "tuneforge.cli.main", "quickstart", "--output-dir", out, *extra]
        t0 = time.monotonic()
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, bufsize=1,
                                env=env, cwd=out)
        peak, done = [0], threading.Event()

        def sample() -> None:
            while not done.is_set():
                peak[0] = max(peak[0], tree_rss_kb(proc.pid))
                done.wait(0.25)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        found = None
        assert proc.stdout is not None
        for line in proc.stdout:
            if found := SUMMARY.search(line):
                break
        wall = time.monotonic() - t0
        proc.kill()
        proc.wait()
        done.set()
        sampler.join()
    if not found:
        raise SystemExit(f"bench.quickstart_ab: {label} ({checkout}) ended without a training summary")
    return Trial(label, float(found.group(3)), f"{found.group(1)} -> {found.group(2)}", peak[0], wall)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", type=Path, required=True, help="Checkout of the earlier commit.")
    parser.add_argument("--after", type=Path, default=Path(__file__).resolve().parent.parent,
                        help="Checkout of the later commit (default: this one).")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--set", action="append", default=[], help="quickstart --set, given to both.")
    ns = parser.parse_args(argv)
    extra = [a for s in ns.set for a in ("--set", s)]
    sides = {"before": ns.before.resolve(), "after": ns.after.resolve()}
    print(f"bench.quickstart_ab: before={sides['before']} after={sides['after']}; "
          f"load average at start {os.getloadavg()[0]:.1f}", flush=True)
    trials: list[Trial] = []
    for r in range(ns.rounds):
        order = ["before", "after"] if r % 2 == 0 else ["after", "before"]
        for label in order:
            t = run_once(label, sides[label], extra)
            trials.append(t)
            print(f"round {r + 1} {label}: {t.tokens_per_s:.0f} tokens/s, val loss {t.val_loss}, "
                  f"peak RSS {t.peak_kb / 1e6:.2f} GB (10^6 kB), {t.wall_s:.0f} s; load {os.getloadavg()[0]:.1f}",
                  flush=True)
    med = {k: statistics.median(t.tokens_per_s for t in trials if t.label == k) for k in sides}
    ratios = [a.tokens_per_s / b.tokens_per_s for a, b in zip(
        [t for t in trials if t.label == "after"], [t for t in trials if t.label == "before"], strict=True)]
    print("\n| side | tokens/s (median) | peak RSS GB until training ended (max) |\n|---|---:|---:|")
    for k in sides:
        print(f"| {k} | {med[k]:.0f} | {max(t.peak_kb for t in trials if t.label == k) / 1e6:.2f} |")
    print(f"\nafter / before tokens/s per round: {', '.join(f'{x:.3f}' for x in ratios)}; "
          f"median {statistics.median(ratios):.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
