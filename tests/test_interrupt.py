"""A process `tuneforge ui` launches takes SIGINT back even when its parent had it ignored."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

from tuneforge.interrupt import TAKE_SIGINT_ENV

CHILD = ("import signal; from tuneforge.interrupt import take_back_sigint as t; "
         "took = t(); print(took, signal.getsignal(signal.SIGINT) is signal.default_int_handler)")


def _child(marked: bool) -> str:
    env = {k: v for k, v in os.environ.items() if k != TAKE_SIGINT_ENV}
    if marked:
        env[TAKE_SIGINT_ENV] = "1"
    before = signal.signal(signal.SIGINT, signal.SIG_IGN)  # as under `nohup tuneforge ui &`
    try:
        return subprocess.run([sys.executable, "-c", CHILD], env=env, capture_output=True, text=True,
                              check=True).stdout.strip()
    finally:
        signal.signal(signal.SIGINT, before)


def test_a_marked_child_of_a_parent_that_ignores_sigint_takes_it_back():
    assert _child(marked=True) == "True True"


def test_an_unmarked_child_keeps_what_its_parent_gave_it():
    assert _child(marked=False) == "False False"
