"""bench.rss_phases names each phase by the marker line that ended it and gives its peak RSS."""

from __future__ import annotations

import sys

from bench.rss_phases import run, table

CHILD = """
import time
print("== 1. small", flush=True)
time.sleep(0.6)
big = bytearray(200 * 2**20)  # touched: resident
time.sleep(0.6)  # many samples at 0.05 s: a stalled sampler on a loaded machine still sees it
print("== 2. big", flush=True)
del big
time.sleep(0.3)
print("== 3. freed", flush=True)
time.sleep(0.6)
print("report: done", flush=True)
"""


def test_phases_are_named_by_their_closing_marker_with_their_own_peak():
    phases, rc = run([sys.executable, "-c", CHILD], interval=0.05)
    assert rc == 0
    by_label = {p.label: p.peak_kb / 1024 for p in phases}
    assert by_label["== 2. big"] > 200 > by_label["== 1. small"]  # MiB
    assert by_label["report: done"] < 200  # a phase after the release does not inherit the peak
    assert "| **whole run** |" in table(phases)
