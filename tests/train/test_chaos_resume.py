"""Kill -9 at random moments, resume, same weights: three kills of bench/chaos_resume.py (one inside a
checkpoint write, one during the evaluation after training, one after a random step)."""

from __future__ import annotations

import pytest

from bench.chaos_resume import chaos, plan


@pytest.mark.slow
def test_three_random_kills_resume_to_bit_identical_weights(tmp_path):
    kills = plan(3, seed=0)
    assert {k.kind for k in kills} == {"checkpoint", "eval", "step"}
    outcomes = chaos(3, 0, tmp_path, kills=kills, say=lambda *_: None)
    for o in outcomes:
        assert o.killed, f"the run ended before its kill ({o.kill.describe()}): nothing was tested"
        assert o.resumed and o.identical, o.line()
