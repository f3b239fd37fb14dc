"""Power: the smallest difference a sample detects, the examples an observed one needs, sizing."""

import math

import pytest

from tuneforge.eval.power import detectable_difference, examples_for_precision, examples_needed, precision_at

Z = 1.959964 + 0.841621  # 95% two-sided + 80% power


def test_detectable_difference_shrinks_with_the_square_root_of_n():
    diffs = [1.0, -1.0, 0.0, 0.0] * 25  # sd of differences = sqrt(0.5 * 100/99)
    sd = math.sqrt(50 / 99)
    assert detectable_difference(diffs) == pytest.approx(Z * sd / 10, rel=1e-4)
    assert detectable_difference(diffs * 4) == pytest.approx(detectable_difference(diffs) / 2, rel=0.01)


def test_examples_needed_for_an_observed_difference():
    diffs = [1.0, -1.0, 0.0, 0.0] * 25
    n = examples_needed(diffs, 0.05)
    assert n == math.ceil((Z * math.sqrt(50 / 99) / 0.05) ** 2)
    assert examples_needed(diffs, 0.1) < n  # a larger effect needs fewer
    assert examples_needed(diffs, 0.0) is None


def test_no_disagreement_seen_is_not_a_perfect_test():
    # 40 questions answered identically: the rule of three bounds the unseen disagreement at 3/40
    mdd = detectable_difference([0.0] * 40)
    assert mdd == pytest.approx(Z * math.sqrt(3 / 40) / math.sqrt(40), rel=1e-4)
    assert detectable_difference([0.2] * 40) is None  # continuous scores without variation: cannot say
    assert detectable_difference([0.5]) is None


def test_sizing_by_precision():
    assert examples_for_precision(0.1) == 97
    assert examples_for_precision(0.05) == 385
    assert precision_at(97) <= 0.1 < precision_at(96)
