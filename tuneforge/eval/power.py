"""How sure a comparison can be at its size: the smallest detectable difference and the examples needed.

A paired comparison (the same test examples or probe inputs scored for two models) is a test on the
per-example differences ``d_i``. With their standard deviation ``s`` over ``n`` examples, a two-sided
test at ``confidence`` detects a true mean difference with probability ``power`` when it is at least

    MDD = (z_{1-(1-confidence)/2} + z_{power}) * s / sqrt(n)

and, read the other way, an observed difference ``delta`` needs ``n = ((z_a + z_b) * s / delta)^2``
examples to be shown. These are normal-approximation figures, the usual power calculation; they say
what the sample can see, not what the bootstrap interval found.

When every pair agreed (all differences 0 on right/wrong scores) the observed ``s`` is 0, which would
claim a perfect test; the rule of three bounds the unseen disagreement rate at ``3/n`` instead.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from statistics import NormalDist


def _z(confidence: float, power: float) -> float:
    nd = NormalDist()
    return nd.inv_cdf(1 - (1 - confidence) / 2) + nd.inv_cdf(power)


def _sd(diffs: Sequence[float]) -> float | None:
    n = len(diffs)
    if n < 2:
        return None
    mean = sum(diffs) / n
    sd = math.sqrt(sum((d - mean) ** 2 for d in diffs) / (n - 1))
    if sd <= 1e-12 * max(1.0, abs(mean)):  # constant up to rounding
        sd = 0.0
    if sd == 0 and set(diffs) <= {-1.0, 0.0, 1.0}:
        sd = math.sqrt(3 / n)  # right/wrong scores with no disagreement seen: at most ~3/n disagree
    return sd or None


def detectable_difference(diffs: Sequence[float], confidence: float = 0.95, power: float = 0.8) -> float | None:
    """The smallest true mean difference these ``n`` paired examples detect (None: cannot be estimated)."""
    sd = _sd(diffs)
    return None if sd is None else _z(confidence, power) * sd / math.sqrt(len(diffs))


def examples_needed(diffs: Sequence[float], effect: float, confidence: float = 0.95, power: float = 0.8) -> int | None:
    """Paired examples needed to show a true difference of ``effect`` (None: no difference to show)."""
    sd = _sd(diffs)
    if sd is None or effect == 0:
        return None
    return max(2, math.ceil((_z(confidence, power) * sd / abs(effect)) ** 2))


def examples_for_precision(half_width: float, confidence: float = 0.95) -> int:
    """Examples that give a proportion's interval at most ``half_width`` either side (worst case, p=0.5)."""
    z = NormalDist().inv_cdf(1 - (1 - confidence) / 2)
    return math.ceil((z * 0.5 / half_width) ** 2)


def precision_at(n: int, confidence: float = 0.95) -> float:
    """The worst-case half-width of a proportion's interval over ``n`` examples."""
    z = NormalDist().inv_cdf(1 - (1 - confidence) / 2)
    return z * 0.5 / math.sqrt(max(n, 1))
