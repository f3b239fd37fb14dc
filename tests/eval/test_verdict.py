""""Was fine-tuning worth it?" from hand-built results and predictions."""

import json

from tuneforge.eval.results import MetricValue, ResultRow, write_results
from tuneforge.eval.runner import predictions_path
from tuneforge.eval.verdict import decide


def _write(run, system: str, correct: list[float], tokens: float) -> ResultRow:
    preds = [{"id": f"t{i}", "task": "sentiment", "system": system, "prediction": "", "reference": "",
              "scores": {"accuracy": c}} for i, c in enumerate(correct)]
    path = predictions_path(run, system)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(p) + "\n" for p in preds))
    from tuneforge.eval.metrics import bootstrap_ci

    v, lo, hi = bootstrap_ci(correct, 500)
    row = ResultRow(system, "sentiment", {"accuracy": MetricValue(v, lo, hi, len(correct))}, tokens)
    write_results(run, [row])
    return row


def _probes(run, base: list[float], tuned: list[float]) -> None:
    ids = [f"q{i}" for i in range(len(base))]
    write_results(run, [
        ResultRow("base", "forgetting:boolq", {"accuracy": MetricValue(sum(base) / len(base))},
                  extra={"kind": "forgetting", "ids": ids, "correct": base}),
        ResultRow("tuned", "forgetting:boolq", {"accuracy": MetricValue(sum(tuned) / len(tuned))},
                  extra={"kind": "forgetting", "ids": ids, "correct": tuned}),
    ])


def _rows(run):
    from tuneforge.eval.results import read_results

    return read_results(run)


def test_clear_gain_without_forgetting_is_yes(tmp_path):
    _write(tmp_path, "base zero-shot", [0.0] * 40 + [1.0] * 20, 60)
    _write(tmp_path, "base 3-shot", [1.0] * 30 + [0.0] * 30, 240)
    _write(tmp_path, "tuned", [1.0] * 55 + [0.0] * 5, 60)
    _probes(tmp_path, [1.0, 0.0] * 20, [1.0, 0.0] * 20)
    v = decide(tmp_path, _rows(tmp_path), samples=500)
    assert v.answer == "yes"
    assert "base 3-shot" in v.headline  # compared with the best baseline, not the weakest
    text = "\n".join(v.lines)
    assert "paired bootstrap" in text and "240" in text and "no significant drop" in text


def test_gain_with_a_significant_drop_is_yes_but(tmp_path):
    _write(tmp_path, "base zero-shot", [0.0] * 40 + [1.0] * 20, 60)
    _write(tmp_path, "tuned", [1.0] * 55 + [0.0] * 5, 60)
    _probes(tmp_path, [1.0] * 30 + [0.0] * 10, [0.0] * 30 + [0.0] * 10)
    v = decide(tmp_path, _rows(tmp_path), samples=500)
    assert v.answer == "yes, but" and "forgot" in v.headline
    assert any("flagged on boolq" in line for line in v.lines)


def test_difference_within_noise_is_not_shown_and_mentions_cheaper_prompts(tmp_path):
    _write(tmp_path, "base 3-shot", [1.0, 0.0] * 10, 300)
    _write(tmp_path, "tuned", [1.0, 0.0] * 9 + [1.0, 1.0], 60)
    v = decide(tmp_path, _rows(tmp_path), samples=500)
    assert v.answer == "not shown"
    assert "240 fewer prompt tokens" in v.headline


def test_worse_tuned_model_is_no(tmp_path):
    _write(tmp_path, "base zero-shot", [1.0] * 50 + [0.0] * 10, 60)
    _write(tmp_path, "tuned", [0.0] * 50 + [1.0] * 10, 60)
    assert decide(tmp_path, _rows(tmp_path), samples=500).answer == "no"


def test_rag_rows_count_as_alternatives(tmp_path):
    _write(tmp_path, "base zero-shot", [0.0] * 60, 60)
    _write(tmp_path, "base + RAG", [1.0] * 58 + [0.0] * 2, 400)
    _write(tmp_path, "tuned", [1.0] * 30 + [0.0] * 30, 60)
    v = decide(tmp_path, _rows(tmp_path), samples=500)
    assert v.answer == "no" and "base + RAG" in v.headline


def test_rows_of_another_task_are_judged_separately(tmp_path):
    _write(tmp_path, "base zero-shot", [0.0] * 40 + [1.0] * 20, 60)
    _write(tmp_path, "tuned", [1.0] * 55 + [0.0] * 5, 60)
    # a RAG question set in the same run: its rows must not be compared with the sentiment rows
    write_results(tmp_path, [
        ResultRow("base + RAG", "python-docs-qa", {"answer_accuracy": MetricValue(0.99, 0.95, 1.0, 80)}, 500),
        ResultRow("tuned", "python-docs-qa", {"answer_accuracy": MetricValue(0.2, 0.1, 0.3, 80)}, 40),
    ])
    rows = _rows(tmp_path)
    for r in rows:
        if r.task == "sentiment":
            r.extra["kind"] = "test"
    v = decide(tmp_path, rows, samples=500)
    assert v.answer == "yes" and "base zero-shot" in v.headline
    assert any(line.startswith("task python-docs-qa: No") and "base + RAG" in line for line in v.lines)


def test_the_verdict_states_what_its_test_split_can_detect(tmp_path):
    _write(tmp_path, "base zero-shot", [0.0] * 40 + [1.0] * 20, 60)
    _write(tmp_path, "tuned", [1.0] * 55 + [0.0] * 5, 60)
    v = decide(tmp_path, _rows(tmp_path), samples=500)
    assert v.answer == "yes" and v.detectable is not None and 0 < v.detectable < 0.6 and v.needed is None
    assert any(line.startswith("power: 60 paired test examples detect a true difference of") for line in v.lines)


def test_not_shown_says_how_many_examples_the_observed_difference_needs(tmp_path):
    _write(tmp_path, "base 3-shot", [1.0, 0.0] * 10, 300)
    _write(tmp_path, "tuned", [1.0, 0.0] * 9 + [1.0, 1.0], 60)  # one more right answer of 20
    v = decide(tmp_path, _rows(tmp_path), samples=500)
    assert v.answer == "not shown" and v.needed is not None and v.needed > 20
    assert any(f"would take about {v.needed:,} test examples" in line for line in v.lines)
    assert v.detectable > 0.05  # 20 examples cannot see a +0.05 difference


def test_intervals_off_gives_a_verdict_not_a_crash(tmp_path):
    # eval.bootstrap_samples: 0 is documented as "intervals off"; the report must still say something.
    _write(tmp_path, "base zero-shot", [0.0] * 40 + [1.0] * 20, 60)
    _write(tmp_path, "tuned", [1.0] * 55 + [0.0] * 5, 60)
    v = decide(tmp_path, _rows(tmp_path), samples=0)
    assert "no interval" in "\n".join(v.lines)
