"""Behaviour: what the model answers to general prompts, base vs tuned on the same prompts.

A fine-tune can leave benchmark scores alone and still ruin the model as a chat partner: after a
sentiment task it answers "How was your weekend?" with "positive"; after 140,000 terse Slack messages it
answers everything with "ok". These measures catch that from the answers alone:

- ``label_answers``: share of answers that are just one of the fine-tuning task's answers (its label
  words, or a reference answer that recurs in its test split), optionally followed by a word or two;
- ``repeated_answer``: share of answers equal to the model's most common answer (one answer for all);
- ``short_answers``: share of empty or very short answers (at most ``short_words`` words);
- ``distinct_2``: distinct word bigrams over all bigrams of all answers (variety; lower is worse);
- ``mean_words``: mean answer length in words (reported against the base, not judged on its own).

Base and tuned answer the same prompts, so every change gets a paired bootstrap interval (prompts
resampled together); a change for the worse is flagged when its whole interval lies beyond ``margin``
on the worse side (eval.behaviour_margin, 0.05 by default). Every fine-tune changes how a model answers a
little (a classification task makes it terser: a few more two-word answers in a hundred); a model that
collapses moves these shares by tens of points. The margin plays the part drift_threshold plays for drift.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np

from tuneforge.eval.metrics import normalize

# measure -> which direction is worse ("higher", "lower", or None: reported, not judged)
MEASURES: dict[str, str | None] = {
    "label_answers": "higher", "repeated_answer": "higher", "short_answers": "higher",
    "distinct_2": "lower", "mean_words": None,
}
LABEL_EXTRA_WORDS = 2  # "positive." and "positive, I think" are still a label answer; a sentence is not


def is_task_answer(answer: str, task_answers: Sequence[str]) -> bool:
    """The answer is one of the task's answers, followed by at most a couple of words."""
    words = normalize(answer).split()
    for target in task_answers:
        t = normalize(target).split()
        if t and words[: len(t)] == t and len(words) <= len(t) + LABEL_EXTRA_WORDS:
            return True
    return False


@dataclass
class Answers:
    """One system's answers to the behaviour prompts, and what is measured on them per answer."""

    answers: list[str]
    task_answers: list[str]
    short_words: int = 2

    def __post_init__(self) -> None:
        self.norm = [normalize(a) for a in self.answers]
        self.words = np.array([len(a.split()) for a in self.answers], dtype=float)
        self.label = np.array([is_task_answer(a, self.task_answers) for a in self.answers], dtype=float)
        self.short = (self.words <= self.short_words).astype(float)
        mode = Counter(self.norm).most_common(1)[0][0] if self.norm else ""
        self.mode = mode
        self.repeated = np.array([n == mode for n in self.norm], dtype=float)
        self.bigrams = [list(zip(n.split(), n.split()[1:], strict=False)) for n in self.norm]

    def measure(self, name: str, idx: np.ndarray | None = None) -> float:
        """One measure over the answers ``idx`` (all when None); a resample may repeat answers."""
        idx = np.arange(len(self.answers)) if idx is None else idx
        if len(idx) == 0:
            return float("nan")
        if name == "label_answers":
            return float(self.label[idx].mean())
        if name == "short_answers":
            return float(self.short[idx].mean())
        if name == "mean_words":
            return float(self.words[idx].mean())
        if name == "repeated_answer":  # answers equal to the most common answer of all prompts
            return float(self.repeated[idx].mean())
        if name == "distinct_2":
            # over the distinct prompts drawn: a resample's duplicated prompts would count as lost variety
            unique = sorted(set(idx.tolist()))
            grams = [g for i in unique for g in self.bigrams[i]]
            return len(set(grams)) / len(grams) if grams else 0.0
        raise ValueError(f"unknown behaviour measure {name!r}")

    def per_answer(self, name: str) -> np.ndarray | None:
        """Per-answer values whose mean is the measure (None for corpus measures such as distinct_2)."""
        return {"label_answers": self.label, "short_answers": self.short, "mean_words": self.words,
                "repeated_answer": self.repeated}.get(name)


@dataclass
class BehaviourChange:
    measure: str
    base: float
    tuned: float
    delta: float
    ci_low: float | None
    ci_high: float | None
    se: float | None  # bootstrap standard error of the delta (for the power figures)
    n: int
    worse: str | None
    flagged: bool


def worse_beyond(worse: str | None, lo: float | None, hi: float | None, margin: float = 0.0) -> bool:
    """The whole interval ``[lo, hi]`` of a change lies more than ``margin`` on its worse side."""
    if worse == "higher":
        return lo is not None and lo > margin
    if worse == "lower":
        return hi is not None and hi < -margin
    return False


def compare_answers(base: Answers, tuned: Answers, samples: int = 1000, confidence: float = 0.95,
                    seed: int = 0, margin: float = 0.0) -> list[BehaviourChange]:
    """Tuned-minus-base change of every measure, with a paired bootstrap over prompts; flagged when the
    whole interval lies more than ``margin`` on the worse side of 0."""
    n = len(base.answers)
    if n != len(tuned.answers):
        raise ValueError(f"behaviour answers differ in count: {n} vs {len(tuned.answers)}")
    rng = np.random.default_rng(seed)
    resamples = rng.integers(0, n, size=(samples, n)) if samples > 0 and n > 1 else None
    out = []
    for name, worse in MEASURES.items():
        b, t = base.measure(name), tuned.measure(name)
        lo = hi = se = None
        if resamples is not None:
            deltas = _resampled(lambda idx, m=name: tuned.measure(m, idx) - base.measure(m, idx), resamples)
            a = (1 - confidence) / 2
            se = float(deltas.std(ddof=1))
            if base.per_answer(name) is not None:
                lo, hi = float(np.quantile(deltas, a)), float(np.quantile(deltas, 1 - a))
            else:
                # distinct-n depends on how many answers it counts: resamples see fewer distinct prompts
                # than the full set, so their percentiles are off-centre; use the normal bootstrap interval
                z = NormalDist().inv_cdf(1 - a)
                lo, hi = (t - b) - z * se, (t - b) + z * se
        flagged = worse_beyond(worse, lo, hi, margin)
        out.append(BehaviourChange(name, b, t, t - b, lo, hi, se, n, worse, bool(flagged)))
    return out


def _resampled(fn: Callable[[np.ndarray], float], resamples: np.ndarray) -> np.ndarray:
    return np.array([fn(idx) for idx in resamples])


def task_answers_of(examples: list[dict]) -> list[str]:
    """The fine-tuning task's answers: its label words, or else reference answers that recur in its
    examples (stock replies such as "ok" or "thanks")."""
    labels = {str(label) for e in examples for label in ((e.get("meta") or {}).get("label_set") or [])}
    if labels:
        return sorted(labels)
    refs = Counter(
        normalize(m["content"]) for e in examples for m in (e.get("messages") or [])[-1:] if m.get("role") == "assistant"
    )
    return sorted(r for r, c in refs.items() if r and c >= 2)
