""""Was fine-tuning worth it?": the tuned model against the best alternative, with the numbers.

The tuned model is compared with the best system that needs no fine-tuning (zero/k-shot, RAG) on the
primary metric. Where both have per-example predictions the difference gets a paired bootstrap
interval; otherwise the two intervals are compared. Prompt cost and forgetting enter the verdict too.

Every verdict also says what its sample can see: the smallest difference the paired test split detects
at its size (at ``power``, see :mod:`tuneforge.eval.power`) and, when the answer is "not shown", how many
test examples the observed difference would need.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from tuneforge.eval.compare import collect_predictions, fmt_metric, is_probe, primary_metric
from tuneforge.eval.forgetting import ForgettingDelta, compare_forgetting
from tuneforge.eval.metrics import paired_delta
from tuneforge.eval.power import detectable_difference, examples_needed
from tuneforge.eval.results import ResultRow


@dataclass
class Verdict:
    answer: str  # "yes", "yes, but", "no", "not shown", "no tuned model", "no results"
    headline: str
    lines: list[str] = field(default_factory=list)
    forgetting: list[ForgettingDelta] = field(default_factory=list)
    detectable: float | None = None  # smallest true difference the paired test split detects
    needed: int | None = None  # test examples needed to show the observed difference ("not shown")


def _task_order(test: list[ResultRow]) -> list[str]:
    """Tasks of the test split first (rows eval wrote), then others (e.g. a RAG question set)."""
    tasks: list[str] = []
    for kind_first in (True, False):
        for r in test:
            if (r.extra.get("kind") == "test") == kind_first and r.task not in tasks:
                tasks.append(r.task)
    return tasks


def decide(run_path: str | Path, rows: list[ResultRow], samples: int = 1000, confidence: float = 0.95,
           margin: float = 0.0, seed: int = 0, *, drift_threshold: float = 0.1, power: float = 0.8,
           behaviour_margin: float = 0.05) -> Verdict:
    """The verdict on the run's main task (the test split), with other tasks' comparisons appended."""
    test = [r for r in rows if not is_probe(r)]
    forgetting = compare_forgetting(rows, samples=samples, confidence=confidence, margin=margin, seed=seed,
                                    drift_threshold=drift_threshold, power=power,
                                    behaviour_margin=behaviour_margin)
    if not test:
        return Verdict("no results", "No test-split results yet: run `tuneforge eval` first.", forgetting=forgetting)
    verdicts = [_decide_task(run_path, [r for r in test if r.task == t], forgetting, samples, confidence, seed, power)
                for t in _task_order(test)]
    main = verdicts[0]
    for t, other in zip(_task_order(test)[1:], verdicts[1:], strict=True):
        main.lines.append(f"task {t}: {other.headline}")
    return main


def _decide_task(run_path: str | Path, test: list[ResultRow], forgetting: list[ForgettingDelta], samples: int,
                 confidence: float, seed: int, power: float = 0.8) -> Verdict:
    metric = primary_metric(test)
    if metric is None:
        return Verdict("no results", "No metrics in the results.", forgetting=forgetting)
    task = test[0].task
    tuned = next((r for r in test if r.system == "tuned" and metric in r.metrics), None)
    others = [r for r in test if not r.system.startswith("tuned") and metric in r.metrics]
    best = max(others, key=lambda r: r.metrics[metric].value, default=None)
    if tuned is None:
        head = "No tuned model in this run: these are the baselines fine-tuning has to beat."
        lines = [f"{r.system}: {metric} {fmt_metric(r.metrics[metric])}" for r in others]
        return Verdict("no tuned model", head, lines, forgetting)
    if best is None:
        return Verdict("not shown", f"tuned {metric} {fmt_metric(tuned.metrics[metric])}; no baseline to compare with.",
                       forgetting=forgetting)

    t, b = tuned.metrics[metric], best.metrics[metric]
    lines = [f"tuned {metric}: {fmt_metric(t)}", f"best baseline ({best.system}) {metric}: {fmt_metric(b)}"]
    lo = hi = None
    diffs: list[float] = []
    preds = collect_predictions(run_path)
    pt = [r for r in preds.get("tuned", []) if str(r.get("task")) == task or test[0].task == "all"]
    pb = [r for r in preds.get(best.system, []) if str(r.get("task")) == task or test[0].task == "all"]
    if pt and pb and all(metric in r.get("scores", {}) for r in pt + pb):
        sb = {str(r["id"]): r["scores"][metric] for r in pb}
        pairs = [(sb[str(r["id"])], r["scores"][metric]) for r in pt if str(r["id"]) in sb]
        if len(pairs) > 1:
            d, lo, hi = paired_delta([p[0] for p in pairs], [p[1] for p in pairs], samples, confidence, seed)
            if lo is None or hi is None:  # eval.bootstrap_samples: 0 turns intervals off
                lines.append(f"difference (tuned - {best.system}): {d:+.3f} over {len(pairs)} test examples "
                             "(no interval: eval.bootstrap_samples is 0)")
            else:
                lines.append(f"difference (tuned - {best.system}): {d:+.3f}, {confidence:.0%} paired bootstrap "
                             f"interval [{lo:+.3f}, {hi:+.3f}] over {len(pairs)} test examples")
            diffs = [p[1] - p[0] for p in pairs]
    if lo is None and None not in (t.ci_low, t.ci_high, b.ci_low, b.ci_high):
        lo, hi = t.ci_low - b.ci_high, t.ci_high - b.ci_low  # conservative: intervals must not overlap
        lines.append(f"difference {t.value - b.value:+.3f}; intervals {'overlap' if lo <= 0 <= hi else 'do not overlap'}")
    better = lo is not None and lo > 0
    worse = hi is not None and hi < 0
    observed = t.value - b.value
    detectable = detectable_difference(diffs, confidence, power) if diffs else None
    needed = examples_needed(diffs, observed, confidence, power) if diffs and not (better or worse) else None
    if detectable is not None:
        lines.append(f"power: {len(diffs)} paired test examples detect a true difference of {detectable:.3f} or more "
                     f"({power:.0%} of the time, at {confidence:.0%} confidence); smaller ones may go unseen")
    elif t.n is not None and t.n < 100:
        lines.append(f"only {t.n} test examples: intervals are wide; more test data would sharpen the verdict")
    if needed is not None:
        lines.append(f"to show the observed difference of {observed:+.3f}, if it is real, would take about "
                     f"{needed:,} test examples")
    elif diffs and not (better or worse) and observed == 0:
        lines.append("the two systems scored the same: no number of test examples would show a difference here")

    tok_t, tok_b = tuned.prompt_tokens_per_request, best.prompt_tokens_per_request
    cheaper = tok_t is not None and tok_b is not None and tok_t < tok_b * 0.8
    if tok_t is not None and tok_b is not None:
        lines.append(f"prompt tokens per request: tuned {tok_t:.0f} vs {best.system} {tok_b:.0f}")
    drops = [f for f in forgetting if f.flagged]
    if forgetting:
        probes = len({f.probe for f in forgetting})
        lines.append(
            "forgetting: flagged on " + ", ".join(
                (f"behaviour ({f.metric} {f.delta:+.3f})" if f.probe == "behaviour" else f"{f.probe} ({f.delta:+.3f})")
                for f in drops) + " (details in the forgetting table)"
            if drops else f"forgetting: no significant drop or change for the worse on {probes} probes"
        )
    else:
        lines.append("forgetting: not measured (eval.forgetting off or no probe rows)")

    if better:
        answer = "yes, but" if drops else "yes"
        head = (f"Yes: fine-tuning beats the best baseline ({best.system}) on {metric} by {t.value - b.value:+.3f}"
                + (", but it forgot general ability (see the forgetting table)." if drops else "."))
    elif worse:
        answer, head = "no", f"No: the tuned model is worse than {best.system} on {metric} ({t.value - b.value:+.3f})."
    else:
        answer = "not shown"
        head = f"Not shown: the tuned model's {metric} is within noise of {best.system} ({t.value - b.value:+.3f})"
        head += (f", though it needs {tok_b - tok_t:.0f} fewer prompt tokens per request." if cheaper else ".")
    return Verdict(answer, head, lines, forgetting, detectable, needed)
