"""Metrics on generated answers, and bootstrap confidence intervals.

Per-example metrics (accuracy, exact match, token F1, ROUGE-L) return one score per example so the
interval is a bootstrap over examples. Corpus metrics (BLEU, chrF via sacrebleu) are recomputed on each
bootstrap resample. Normalisation follows SQuAD (lower case, no punctuation, no articles, single spaces)
so that "The Answer." and "answer" match.
"""

from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Callable, Sequence

import numpy as np

from tuneforge.eval.results import MetricValue

PER_EXAMPLE = ("accuracy", "exact_match", "token_f1", "rouge_l")
CORPUS = ("bleu", "chrf")
ALL_METRICS = PER_EXAMPLE + CORPUS

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCT = str.maketrans("", "", string.punctuation)


def normalize(text: str) -> str:
    """SQuAD normalisation: lower case, drop punctuation and articles, collapse whitespace."""
    text = text.lower().translate(_PUNCT)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def extract_label(prediction: str, label_set: Sequence[str]) -> str | None:
    """The label a free-text answer names: the one whose (normalised) words occur earliest.

    ``"Fresh! I loved it"`` -> ``fresh``; ``"It is rotten, not fresh"`` -> ``rotten``; no label -> None.
    At the same position the longer label wins ("very positive" over "positive").
    """
    words = normalize(prediction).split()
    best: tuple[int, int, str] | None = None
    for label in label_set:
        target = normalize(label).split()
        if not target:
            continue
        for i in range(len(words) - len(target) + 1):
            if words[i : i + len(target)] == target:
                key = (i, -len(target), label)
                if best is None or key < best:
                    best = key
                break
    return best[2] if best else None


def accuracy(prediction: str, reference: str, label_set: Sequence[str]) -> float:
    label = extract_label(prediction, label_set)
    return float(label is not None and normalize(label) == normalize(reference))


def exact_match(prediction: str, reference: str) -> float:
    return float(normalize(prediction) == normalize(reference))


def token_f1(prediction: str, reference: str) -> float:
    """SQuAD token-overlap F1 on normalised words."""
    pred, ref = normalize(prediction).split(), normalize(reference).split()
    if not pred or not ref:
        return float(pred == ref)
    common = sum((Counter(pred) & Counter(ref)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(pred), common / len(ref)
    return 2 * precision * recall / (precision + recall)


def _lcs(a: list[str], b: list[str]) -> int:
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b):
            cur.append(prev[j] + 1 if x == y else max(prev[j + 1], cur[j]))
        prev = cur
    return prev[-1]


def rouge_l(prediction: str, reference: str) -> float:
    """ROUGE-L F1 (longest common subsequence of lower-cased word tokens, as in rouge-score)."""
    pred = re.sub(r"[^a-z0-9]+", " ", prediction.lower()).split()
    ref = re.sub(r"[^a-z0-9]+", " ", reference.lower()).split()
    if not pred or not ref:
        return 0.0
    lcs = _lcs(pred, ref)
    if lcs == 0:
        return 0.0
    precision, recall = lcs / len(pred), lcs / len(ref)
    return 2 * precision * recall / (precision + recall)


def bleu(predictions: Sequence[str], references: Sequence[str]) -> float:
    """Corpus BLEU (sacrebleu defaults, 0-100)."""
    import sacrebleu

    return float(sacrebleu.corpus_bleu(list(predictions), [list(references)]).score)


def chrf(predictions: Sequence[str], references: Sequence[str]) -> float:
    """Corpus chrF (sacrebleu defaults, 0-100)."""
    import sacrebleu

    return float(sacrebleu.corpus_chrf(list(predictions), [list(references)]).score)


def bootstrap_ci(
    scores: Sequence[float], samples: int = 1000, confidence: float = 0.95, seed: int = 0
) -> tuple[float, float | None, float | None]:
    """Mean of per-example scores with a percentile-bootstrap interval (None when it cannot be had)."""
    arr = np.asarray(scores, dtype=float)
    if arr.size == 0:
        return float("nan"), None, None
    mean = float(arr.mean())
    if samples <= 0 or arr.size < 2:
        return mean, None, None
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, arr.size, size=(samples, arr.size))
    means = arr[idx].mean(axis=1)
    alpha = (1 - confidence) / 2
    return mean, float(np.quantile(means, alpha)), float(np.quantile(means, 1 - alpha))


def wilson_ci(successes: float, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of a proportion (sensible at 0/n and n/n, unlike a bootstrap)."""
    from statistics import NormalDist

    z = NormalDist().inv_cdf(1 - (1 - confidence) / 2)
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * ((p * (1 - p) / n + z * z / (4 * n * n)) ** 0.5) / (1 + z * z / n)
    return max(0.0, round(centre - half, 12)), min(1.0, round(centre + half, 12))


def mean_ci(
    scores: Sequence[float], samples: int = 1000, confidence: float = 0.95, seed: int = 0
) -> tuple[float, float | None, float | None]:
    """Bootstrap interval of the mean, except where it collapses: when every example scored the same
    0 or 1 (0/60 correct) resampling can only return that value, so the Wilson interval is used."""
    mean, lo, hi = bootstrap_ci(scores, samples, confidence, seed)
    arr = np.asarray(scores, dtype=float)
    if lo is not None and lo == hi and arr.size > 1 and set(np.unique(arr)) <= {0.0, 1.0}:
        lo, hi = wilson_ci(float(arr.sum()), int(arr.size), confidence)
    return mean, lo, hi


def corpus_bootstrap_ci(
    metric: Callable[[Sequence[str], Sequence[str]], float],
    predictions: Sequence[str],
    references: Sequence[str],
    samples: int = 200,
    confidence: float = 0.95,
    seed: int = 0,
) -> tuple[float, float | None, float | None]:
    """A corpus-level metric with an interval from recomputing it on resampled examples."""
    value = metric(predictions, references)
    n = len(predictions)
    if samples <= 0 or n < 2:
        return value, None, None
    rng = np.random.default_rng(seed)
    vals = []
    for _ in range(samples):
        idx = rng.integers(0, n, size=n)
        vals.append(metric([predictions[i] for i in idx], [references[i] for i in idx]))
    alpha = (1 - confidence) / 2
    return value, float(np.quantile(vals, alpha)), float(np.quantile(vals, 1 - alpha))


def paired_delta(
    base: Sequence[float], tuned: Sequence[float], samples: int = 1000, confidence: float = 0.95, seed: int = 0
) -> tuple[float, float | None, float | None]:
    """Mean of ``tuned - base`` over the same examples, with a paired-bootstrap interval."""
    if len(base) != len(tuned):
        raise ValueError(f"paired scores differ in length: {len(base)} vs {len(tuned)}")
    diff = np.asarray(tuned, dtype=float) - np.asarray(base, dtype=float)
    return bootstrap_ci(diff, samples=samples, confidence=confidence, seed=seed)


def metric_value(
    name: str,
    predictions: Sequence[str],
    references: Sequence[str],
    per_example: Sequence[float] | None,
    samples: int,
    confidence: float,
    seed: int,
) -> MetricValue:
    """Aggregate one metric into a MetricValue with its interval."""
    if name in CORPUS:
        fn = bleu if name == "bleu" else chrf
        value, lo, hi = corpus_bootstrap_ci(fn, predictions, references, min(samples, 200), confidence, seed)
    else:
        value, lo, hi = mean_ci(per_example or [], samples, confidence, seed)
    return MetricValue(value=value, ci_low=lo, ci_high=hi, n=len(predictions))


def score_example(name: str, prediction: str, reference: str, label_set: Sequence[str] | None) -> float:
    """One example's score on a per-example metric."""
    if name == "accuracy":
        return accuracy(prediction, reference, label_set or [reference])
    if name == "exact_match":
        return exact_match(prediction, reference)
    if name == "token_f1":
        return token_f1(prediction, reference)
    if name == "rouge_l":
        return rouge_l(prediction, reference)
    raise ValueError(f"{name} is not a per-example metric")


def default_metrics(task: str, classification: bool) -> list[str]:
    """Metrics that suit a task: accuracy for classification, overlap metrics for free text."""
    if classification:
        return ["accuracy"]
    names = ["exact_match", "token_f1", "rouge_l"]
    if "translat" in task.lower():
        names += ["bleu", "chrf"]
    return names
