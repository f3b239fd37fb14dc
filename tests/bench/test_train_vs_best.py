"""The alternated, repeated comparison against TRL's best CPU configuration: order and ratios."""

from __future__ import annotations

import pytest

from bench.train_vs_best import (
    TRL_ALLOCATOR,
    TRL_BEST,
    TRL_BF16,
    TUNEFORGE,
    TUNEFORGE_BF16,
    median_spread,
    pair_ratios,
    schedule,
    summary_rows,
)
from bench.train_workers import worker_env


def test_contenders_keep_openmps_own_wait_policy_unless_passive_is_asked():
    assert "OMP_WAIT_POLICY" not in worker_env(None, omp_passive=False)  # as users run both tools
    assert worker_env(2, omp_passive=True) == {"TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1",
                                              "OMP_WAIT_POLICY": "PASSIVE", "OMP_NUM_THREADS": "2"}


def test_schedule_flips_the_order_every_repeat():
    assert schedule(3, trl_on_allocator=False) == [(0, TRL_BEST), (0, TUNEFORGE), (1, TUNEFORGE), (1, TRL_BEST), (2, TRL_BEST), (2, TUNEFORGE)]


def test_median_and_spread_of_repeats():
    assert median_spread([2.0, 1.0, 4.0]) == {"median": 2.0, "min": 1.0, "max": 4.0}
    with pytest.raises(ValueError):
        median_spread([])


def _run(tps, cpu, rss, val):
    return {"tokens_per_s": tps, "tokens_per_cpu_s": cpu, "peak_rss_mb": rss, "val_loss": val}


def test_ratios_pair_runs_of_the_same_repeat_and_skip_incomplete_ones():
    runs = {
        (0, TRL_BEST): _run(100, 50, 2000, 4.0), (0, TUNEFORGE): _run(250, 100, 1200, 4.04),
        (1, TUNEFORGE): _run(150, 90, 1300, 3.96), (1, TRL_BEST): _run(100, 60, 2000, 4.0),
        (2, TRL_BEST): _run(100, 50, 2000, 4.0),  # its tuneforge run failed: no ratio from this repeat
    }
    ratios = pair_ratios(runs)
    assert [r["repeat"] for r in ratios] == [1, 2]
    assert ratios[0]["tokens/s x TRL"] == pytest.approx(2.5)
    assert ratios[1]["tokens/CPU-s x TRL"] == pytest.approx(1.5)
    assert ratios[0]["RSS x TRL"] == pytest.approx(0.6)
    assert ratios[0]["val loss diff %"] == pytest.approx(1.0)
    summary = {r["ratio (tuneforge / TRL)"]: r for r in summary_rows(ratios)}
    assert summary["tokens/s x TRL"]["median"] == pytest.approx(2.0)
    assert summary["tokens/s x TRL"]["min"] == pytest.approx(1.5)
    assert summary["val loss diff %"]["max"] == pytest.approx(1.0)


def test_bf16_contenders_join_the_alternation_and_pair_with_either_trl():
    assert schedule(2, bf16=True, trl_on_allocator=False) == [(0, TRL_BEST), (0, TUNEFORGE), (0, TRL_BF16), (0, TUNEFORGE_BF16),
                                      (1, TUNEFORGE_BF16), (1, TRL_BF16), (1, TUNEFORGE), (1, TRL_BEST)]
    runs = {(0, TRL_BEST): _run(100, 50, 2000, 4.0), (0, TRL_BF16): _run(125, 60, 1500, 4.0),
            (0, TUNEFORGE_BF16): _run(250, 100, 1200, 4.04)}
    assert pair_ratios(runs) == []  # the fp32 tuneforge run is missing
    assert pair_ratios(runs, TUNEFORGE_BF16, TRL_BEST)[0]["tokens/s x TRL"] == pytest.approx(2.5)
    assert pair_ratios(runs, TUNEFORGE_BF16, TRL_BF16)[0]["RSS x TRL"] == pytest.approx(0.8)


def test_trl_also_runs_on_tuneforges_allocator_and_pairs_with_both_tuneforge_runs():
    assert schedule(2, trl_on_allocator=True) == [(0, TRL_BEST), (0, TUNEFORGE), (0, TRL_ALLOCATOR),
                                                  (1, TRL_ALLOCATOR), (1, TUNEFORGE), (1, TRL_BEST)]
    runs = {(0, TRL_BEST): _run(100, 50, 2000, 4.0), (0, TRL_ALLOCATOR): _run(125, 60, 1900, 4.0),
            (0, TUNEFORGE): _run(250, 100, 1200, 4.0)}
    assert pair_ratios(runs)[0]["tokens/s x TRL"] == pytest.approx(2.5)
    assert pair_ratios(runs, TUNEFORGE, TRL_ALLOCATOR)[0]["tokens/s x TRL"] == pytest.approx(2.0)
