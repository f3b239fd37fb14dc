"""Catastrophic forgetting: general-ability probes outside the fine-tuning data, base vs tuned.

Two kinds of probe run for base and tuned on the same inputs: multiple-choice benchmarks (probes.py)
and the general probes that work at every model size (drift.py, general loss, behaviour.py). Every
tuned-minus-base change gets a paired bootstrap interval and is flagged only when its whole interval
lies on the worse side (beyond eval.forgetting_drop, eval.drift_threshold or eval.behaviour_margin).
The plain-words reading of each change is in forgetting_reading.py.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from tuneforge.config.eval import EvalConfig
from tuneforge.errors import UserError
from tuneforge.eval.loglik import score_continuations
from tuneforge.eval.metrics import bootstrap_ci, mean_ci, paired_delta
from tuneforge.eval.power import detectable_difference, examples_needed
from tuneforge.eval.probes import PROBES, Question, answer_questions, load_probe
from tuneforge.eval.results import MetricValue, ResultRow

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

    from tuneforge.eval.drift import DriftReference

TASK_PREFIX = "forgetting:"


GENERAL_PROBES = ("drift", "general_loss", "behaviour")
# probe (or behaviour measure) -> what it measures, in words
LABELS = {
    "drift": "drift from the base on general text and chat (KL, nats/token)",
    "general_loss": "loss on reference answers of general instructions (nats/token)",
    "label_answers": "general prompts answered with just a task answer (share)",
    "repeated_answer": "general prompts given the model's most common answer (share)",
    "short_answers": "empty or very short answers to general prompts (share)",
    "distinct_2": "variety of answers to general prompts (distinct bigrams)",
    "mean_words": "length of answers to general prompts (words)",
}


class ForgettingSuite:
    """The forgetting probes of one evaluation: the base model first, then every model to compare with it.

    Inputs are drawn once (deterministically in ``seed``) so every model answers the same ones; the first
    model run (the base) also records the drift reference that later models are measured against.
    ``task_answers`` are the fine-tuning task's answers (label words) the behaviour probe looks for.
    """

    def __init__(self, tokenizer: PreTrainedTokenizerBase, cfg: EvalConfig, seed: int = 0,
                 task_answers: list[str] | tuple[str, ...] = (), multiple_choice: list[str] | None = None,
                 general: list[str] | None = None) -> None:
        self.tokenizer, self.cfg, self.seed = tokenizer, cfg, seed
        self.multiple_choice = list(cfg.forgetting_tasks if multiple_choice is None else multiple_choice)
        self.general = list(cfg.general_probes if general is None else general)
        for name in self.multiple_choice:
            if name not in PROBES:
                raise UserError(f"eval.forgetting_tasks: unknown probe {name!r}; choose from {', '.join(PROBES)}")
        for name in self.general:
            if name not in GENERAL_PROBES:
                raise UserError(f"eval.general_probes: unknown probe {name!r}; choose from {', '.join(GENERAL_PROBES)}")
        self.task_answers = sorted({a for a in task_answers if a and a.strip()})
        self.reference: DriftReference | None = None
        self._questions: dict[str, list[Question]] = {}

    def run(self, model: PreTrainedModel, system: str, *, base: bool | None = None) -> list[ResultRow]:
        """Rows for every probe (task ``forgetting:<probe>``). ``base``: record the drift reference instead
        of measuring drift (default: the first model this suite runs)."""
        base = self.reference is None if base is None else base
        rows = [self._multiple_choice(model, name, system) for name in self.multiple_choice]
        if "drift" in self.general:
            if base:
                self.reference = self._drift_reference(model, system)
            elif self.reference is None:
                raise RuntimeError("drift needs the base model's reference: run the base model first")
            else:
                rows.append(self._drift(model, system))
        if "general_loss" in self.general:
            rows.append(self._general_loss(model, system))
        if "behaviour" in self.general:
            rows.append(self._behaviour(model, system))
        return rows

    def _multiple_choice(self, model: PreTrainedModel, name: str, system: str) -> ResultRow:
        cfg = self.cfg
        if name not in self._questions:
            self._questions[name] = load_probe(name, cfg, self.seed)
        questions = self._questions[name]
        picks = answer_questions(model, self.tokenizer, questions, cfg.forgetting_batch_size, f"{system}: {name}",
                                 cfg.batch_tokens)
        correct = [float(p == q.gold) for p, q in zip(picks, questions, strict=True)]
        value, lo, hi = mean_ci(correct, cfg.bootstrap_samples, cfg.confidence, self.seed)
        chance = sum(1 / len(q.choices) for q in questions) / len(questions)
        return ResultRow(
            system=system, task=TASK_PREFIX + name,
            metrics={"accuracy": MetricValue(value, lo, hi, len(questions))},
            extra={"kind": "forgetting", "chance": chance, "ids": [q.id for q in questions], "correct": correct},
        )

    def _drift_reference(self, model: PreTrainedModel, system: str) -> DriftReference:
        from tuneforge.eval import drift
        from tuneforge.eval.general_data import drift_inputs

        inputs = drift_inputs(self.cfg.general_examples, self.seed)
        return drift.reference(model, self.tokenizer, inputs, self.cfg.drift_max_tokens, self.cfg.drift_top_k,
                               desc=f"{system}: drift reference", max_batch_tokens=self.cfg.batch_tokens)

    def _drift(self, model: PreTrainedModel, system: str) -> ResultRow:
        from tuneforge.eval import drift

        assert self.reference is not None
        kls = drift.kl_per_input(model, self.tokenizer, self.reference, desc=f"{system}: drift",
                                 max_batch_tokens=self.cfg.batch_tokens)
        value, lo, hi = bootstrap_ci(kls, self.cfg.bootstrap_samples, self.cfg.confidence, self.seed)
        return ResultRow(system=system, task=TASK_PREFIX + "drift", metrics={"kl": MetricValue(value, lo, hi, len(kls))},
                         extra={"kind": "forgetting", "probe": "drift", "ids": self.reference.ids, "scores": kls,
                                "worse": "higher", "top_k": self.cfg.drift_top_k})

    def _general_loss(self, model: PreTrainedModel, system: str) -> ResultRow:
        from tuneforge.eval.general_data import loss_inputs
        from tuneforge.eval.generation import render_prompt

        inputs = loss_inputs(self.cfg.general_examples, self.seed)
        pairs = [(render_prompt(self.tokenizer, x.messages or []), x.reference or "") for x in inputs]
        scores = score_continuations(model, self.tokenizer, pairs, batch_size=self.cfg.forgetting_batch_size,
                                     desc=f"{system}: general loss", max_batch_tokens=self.cfg.batch_tokens)
        losses = [-s.logprob / max(s.tokens, 1) for s in scores]
        value, lo, hi = bootstrap_ci(losses, self.cfg.bootstrap_samples, self.cfg.confidence, self.seed)
        return ResultRow(system=system, task=TASK_PREFIX + "general_loss",
                         metrics={"loss": MetricValue(value, lo, hi, len(losses))},
                         extra={"kind": "forgetting", "probe": "general_loss", "ids": [x.id for x in inputs],
                                "scores": losses, "worse": "higher"})

    def _behaviour(self, model: PreTrainedModel, system: str) -> ResultRow:
        from tuneforge.eval.behaviour import MEASURES, Answers
        from tuneforge.eval.general_data import behaviour_inputs
        from tuneforge.eval.generation import generate_batch

        cfg = self.cfg
        inputs = behaviour_inputs(cfg.general_examples, self.seed)
        answers = generate_batch(model, self.tokenizer, [x.messages or [] for x in inputs],
                                 max_new_tokens=cfg.behaviour_max_new_tokens, batch_size=cfg.batch_size,
                                 temperature=0.0, seed=self.seed, stop=list(cfg.stop) or None, progress=False,
                                 max_batch_tokens=cfg.batch_tokens)
        a = Answers(answers, self.task_answers, cfg.short_answer_words)
        return ResultRow(system=system, task=TASK_PREFIX + "behaviour",
                         metrics={m: MetricValue(a.measure(m), n=len(answers)) for m in MEASURES},
                         extra={"kind": "forgetting", "probe": "behaviour", "ids": [x.id for x in inputs],
                                "answers": answers, "task_answers": self.task_answers,
                                "short_words": cfg.short_answer_words})


def run_forgetting(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, cfg: EvalConfig, system: str, seed: int = 0,
    suite: ForgettingSuite | None = None,
) -> list[ResultRow]:
    """Every probe in ``cfg.forgetting_tasks`` and ``cfg.general_probes``; one row per probe (task
    ``forgetting:<probe>``). Give the same ``suite`` for the base and then the tuned model: drift is measured
    against the first model the suite ran (without one, this model is that reference and gets no drift row).

    ``extra`` keeps per-input ids and scores (answers, for behaviour) so that base and tuned pair up.
    """
    return (suite or ForgettingSuite(tokenizer, cfg, seed)).run(model, system)


@dataclass
class ForgettingDelta:
    """One probe's (or one behaviour measure's) tuned-minus-base change."""

    probe: str
    base: float
    tuned: float
    delta: float
    ci_low: float | None
    ci_high: float | None
    n: int
    flagged: bool  # a change for the worse whose whole interval is on the worse side
    chance: float | None = None  # accuracy of guessing: a base model near it has little left to forget
    metric: str = "accuracy"
    worse: str | None = "lower"  # which direction of change is worse; None: reported, not judged
    detectable: float | None = None  # smallest true change this many inputs detect (at eval.power)
    needed: int | None = None  # inputs needed to show the observed change (when not flagged)
    threshold: float | None = None  # drift, behaviour: how far beyond 0 the whole interval must lie to flag

    @property
    def label(self) -> str:
        return LABELS.get(self.metric if self.probe == "behaviour" else self.probe, f"{self.probe} {self.metric}")


def compare_forgetting(
    rows: list[ResultRow], base: str = "base", tuned: str = "tuned", samples: int = 1000,
    confidence: float = 0.95, margin: float = 0.0, seed: int = 0, *, drift_threshold: float = 0.1,
    power: float = 0.8, behaviour_margin: float = 0.05,
) -> list[ForgettingDelta]:
    """Tuned-minus-base change on every probe, paired over the same inputs, with a flag and power figures.

    ``margin`` (eval.forgetting_drop) applies to accuracy drops; drift is flagged above ``drift_threshold``;
    behaviour shares beyond ``behaviour_margin`` (eval.behaviour_margin).
    """
    by_key: dict[tuple[str, str], ResultRow] = {(r.system, r.task): r for r in rows}
    out: list[ForgettingDelta] = []
    for (system, task), t in by_key.items():
        if system != tuned or not task.startswith(TASK_PREFIX):
            continue
        b = by_key.get((base, task))
        probe = task[len(TASK_PREFIX):]
        if t.extra.get("probe") == "drift":
            out.append(_drift_delta(t, samples, confidence, seed, drift_threshold, power))
        elif b is None:
            continue
        elif t.extra.get("probe") == "behaviour":
            out += _behaviour_deltas(b, t, samples, confidence, seed, power, behaviour_margin)
        else:
            d = _paired_delta(probe, b, t, samples, confidence, margin, seed, power)
            if d is not None:
                out.append(d)
    return out


def _drift_delta(t: ResultRow, samples: int, confidence: float, seed: int, threshold: float,
                 power: float) -> ForgettingDelta:
    kls = list(t.extra.get("scores", []))
    value, lo, hi = bootstrap_ci(kls, samples, confidence, seed)
    return ForgettingDelta(
        probe="drift", base=0.0, tuned=value, delta=value, ci_low=lo, ci_high=hi, n=len(kls),
        flagged=lo is not None and lo > threshold, metric="kl", worse="higher",
        detectable=detectable_difference(kls, confidence, power), threshold=threshold,
        needed=examples_needed(kls, value, confidence, power) if lo is None or lo <= threshold else None,
    )


def _paired_delta(probe: str, b: ResultRow, t: ResultRow, samples: int, confidence: float, margin: float,
                  seed: int, power: float) -> ForgettingDelta | None:
    pb, pt = _paired(b.extra), _paired(t.extra)
    common = [i for i in pb if i in pt]
    if not common:
        return None
    xb, xt = [pb[i] for i in common], [pt[i] for i in common]
    d, lo, hi = paired_delta(xb, xt, samples, confidence, seed)
    worse = t.extra.get("worse", "lower")
    metric = next(iter(t.metrics), "accuracy")
    # accuracy: a drop beyond eval.forgetting_drop; a loss: any rise
    flagged = (hi is not None and hi < -margin) if worse == "lower" else (lo is not None and lo > 0)
    diffs = [y - x for x, y in zip(xb, xt, strict=True)]
    return ForgettingDelta(
        probe=probe, base=sum(xb) / len(xb), tuned=sum(xt) / len(xt), delta=d, ci_low=lo, ci_high=hi,
        n=len(common), flagged=flagged, chance=b.extra.get("chance"), metric=metric, worse=worse,
        detectable=detectable_difference(diffs, confidence, power),
        needed=None if flagged else examples_needed(diffs, d, confidence, power),
    )


def _behaviour_deltas(b: ResultRow, t: ResultRow, samples: int, confidence: float, seed: int,
                      power: float, margin: float) -> list[ForgettingDelta]:
    from tuneforge.eval.behaviour import Answers, compare_answers

    if b.extra.get("ids") != t.extra.get("ids"):
        return []  # different prompts: nothing to pair
    words = int(t.extra.get("short_words", 2))
    labels = list(t.extra.get("task_answers") or b.extra.get("task_answers") or [])
    ab, at = Answers(list(b.extra["answers"]), labels, words), Answers(list(t.extra["answers"]), labels, words)
    out = []
    for c in compare_answers(ab, at, samples, confidence, seed, margin):
        per_b, per_t = ab.per_answer(c.measure), at.per_answer(c.measure)
        if per_b is not None and per_t is not None:
            diffs = (per_t - per_b).tolist()
            mdd, needed = detectable_difference(diffs, confidence, power), examples_needed(diffs, c.delta, confidence, power)
        else:
            mdd, needed = _from_se(c.se, c.n, c.delta, confidence, power)
        out.append(ForgettingDelta(
            probe="behaviour", base=c.base, tuned=c.tuned, delta=c.delta, ci_low=c.ci_low, ci_high=c.ci_high,
            n=c.n, flagged=c.flagged, metric=c.measure, worse=c.worse, detectable=mdd,
            needed=None if c.flagged or c.worse is None else needed,
            threshold=None if c.worse is None else margin,
        ))
    return out


def _from_se(se: float | None, n: int, delta: float, confidence: float, power: float) -> tuple[float | None, int | None]:
    """Power figures from a bootstrap standard error (measures with no per-input decomposition)."""
    if not se:
        return None, None
    from statistics import NormalDist

    z = NormalDist().inv_cdf(1 - (1 - confidence) / 2) + NormalDist().inv_cdf(power)
    mdd = z * se
    return mdd, (max(2, math.ceil(n * (mdd / abs(delta)) ** 2)) if delta else None)


def _paired(extra: dict[str, Any]) -> dict[str, float]:
    values = extra.get("correct", extra.get("scores", []))
    return dict(zip(extra.get("ids", []), values, strict=False))


def probe_name(task: str) -> str:
    return re.sub(f"^{TASK_PREFIX}", "", task)
