"""Quality checks over converted examples: empty and low-information answers, duplicates (exact and
near), conflicting answers, PII, token lengths, label balance; and the printed summary of a report.
"""

from __future__ import annotations

import re
import zlib
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from tuneforge.data.example import ChatExample

# Answers that teach a model nothing (the "ok, I'll do it in the morning" failure).
LOW_INFORMATION = {
    "ok", "okay", "k", "kk", "ok thanks", "will do", "i will do it", "ill do it", "i'll do it", "thanks",
    "thank you", "thx", "ty", "sure", "yes", "no", "yep", "nope", "done", "noted", "got it", "sounds good",
    "lol", "haha", "cool", "great", "nice", "fine", "np", "no problem", "+1", "lgtm", "will check",
    "i'll check", "ok will do", "on it", "see above", "n/a", "na", "none", "idk", "?", "...", "-",
}
HIST_EDGES = [0, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192]


def normalize(text: str) -> str:
    return " ".join(re.sub(r"[^\w\s']", " ", text.lower()).split())


ACKNOWLEDGE = ("ok", "okay", "sure", "will do", "thanks", "thank you", "got it", "noted", "yes", "yep", "k")
DEFER = ("i'll", "i will", "will do", "later", "tomorrow", "in the morning", "asap", "on it", "tonight", "next week")


def is_low_information(answer: str) -> bool:
    """An acknowledgement with no content: "ok", "thanks!", "ok, I'll do it in the morning"."""
    norm = normalize(answer)
    if norm in LOW_INFORMATION or answer.strip() in LOW_INFORMATION:
        return True
    words = norm.split()
    if not words or not any(norm == a or norm.startswith(a + " ") for a in ACKNOWLEDGE):
        return False
    return len(words) <= 3 or (len(words) <= 8 and any(d in f" {norm} " for d in DEFER))


def _shingles(text: str, n: int = 3) -> set[int]:
    words = normalize(text).split()
    if len(words) < n:
        return {zlib.crc32(" ".join(words).encode())} if words else set()
    return {zlib.crc32(" ".join(words[i : i + n]).encode()) for i in range(len(words) - n + 1)}


def near_duplicate_pairs(texts: list[str], threshold: float = 0.8, seed: int = 0) -> list[tuple[int, int, float]]:
    """Pairs (i, j, Jaccard) of texts whose word 3-gram sets overlap at least ``threshold``.

    MinHash with 64 permutations in 16 bands of 4 rows finds candidates (a pair at Jaccard 0.8 is a
    candidate with probability > 0.99); candidates are confirmed with the exact Jaccard. Shingles that
    occur in many texts (a template's fixed instruction) are left out first, so texts are compared on
    what differs between them, not on the prompt they share.
    """
    rng = np.random.default_rng(seed)
    prime = np.uint64((1 << 61) - 1)
    a = rng.integers(1, 1 << 31, size=64, dtype=np.uint64)
    b = rng.integers(0, 1 << 31, size=64, dtype=np.uint64)
    sets = [_shingles(t) for t in texts]
    df = Counter(x for s in sets for x in s)
    common = {x for x, n in df.items() if n > max(2, 0.05 * len(texts))}
    if common:
        sets = [s - common for s in sets]
    buckets: dict[tuple[int, bytes], list[int]] = {}
    for i, s in enumerate(sets):
        if not s:
            continue
        x = np.fromiter(s, dtype=np.uint64, count=len(s))
        sig = ((np.outer(x, a) + b) % prime).min(axis=0)
        for band in range(16):
            buckets.setdefault((band, sig[band * 4 : band * 4 + 4].tobytes()), []).append(i)
    candidates = {(i, j) for members in buckets.values() if len(members) > 1
                  for k, i in enumerate(members) for j in members[k + 1 :]}
    pairs = []
    for i, j in sorted(candidates):
        inter = len(sets[i] & sets[j])
        jac = inter / len(sets[i] | sets[j])
        if jac >= threshold:
            pairs.append((i, j, round(jac, 3)))
    return pairs


def token_lengths(examples: list[ChatExample], tokenizer: Any | None) -> tuple[list[int], str]:
    """Tokens per example through the chat template, or an estimate (characters / 4) without a tokenizer."""
    if tokenizer is None or not getattr(tokenizer, "chat_template", None):
        return [sum(len(m["content"]) for m in e.messages) // 4 + 4 * len(e.messages) for e in examples], "estimated"
    texts = [tokenizer.apply_chat_template(e.messages, tokenize=False) for e in examples]
    lengths: list[int] = []
    for start in range(0, len(texts), 512):
        enc = tokenizer(texts[start : start + 512], add_special_tokens=False)["input_ids"]
        lengths += [len(ids) for ids in enc]
    return lengths, getattr(tokenizer, "name_or_path", "") or type(tokenizer).__name__


def histogram(values: list[int]) -> dict[str, Any]:
    if not values:
        return {"count": 0}
    arr = np.asarray(values)
    edges = HIST_EDGES + [max(int(arr.max()) + 1, HIST_EDGES[-1] + 1)]
    counts, _ = np.histogram(arr, bins=edges)
    bins = [{"from": int(lo), "to": int(hi), "count": int(c)} for lo, hi, c in zip(edges[:-1], edges[1:], counts, strict=True)]
    while bins and bins[-1]["count"] == 0:
        bins.pop()
    while bins and bins[0]["count"] == 0:
        bins.pop(0)
    return {
        "count": int(arr.size), "min": int(arr.min()), "mean": round(float(arr.mean()), 1),
        "p50": int(np.percentile(arr, 50)), "p95": int(np.percentile(arr, 95)), "max": int(arr.max()),
        "bins": bins,
        # The same histogram as parallel lists (what the HTML run report draws).
        "edges": [b["from"] for b in bins] + [bins[-1]["to"]] if bins else [],
        "counts": [b["count"] for b in bins],
    }


def label_balance(examples: list[ChatExample]) -> dict[str, Any] | None:
    counts = Counter(e.label for e in examples if e.label is not None)
    if not counts:
        return None
    ordered = dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))
    values = list(ordered.values())
    return {"counts": ordered, "majority_share": round(values[0] / sum(values), 4),
            "imbalance_ratio": round(values[0] / values[-1], 2)}


def format_report(report: dict[str, Any]) -> str:
    """The quality report as a short text summary for the terminal."""
    c = report["counts"]
    lines = [f"data: {report['input']} ({report['format']}{', template ' + report['template'] if report.get('template') else ''})",
             f"  read {c['rows']} rows -> kept {c['kept']} examples"]
    for reason, n in sorted(report["dropped"].items()):
        lines.append(f"  dropped {n:>6}  {reason}")
    for reason, n in sorted(report["changed"].items()):
        lines.append(f"  changed {n:>6}  {reason}")
    if report.get("splits"):
        lines.append("  splits: " + ", ".join(f"{k} {v}" for k, v in report["splits"].items()))
    tl = report.get("token_lengths", {})
    if tl.get("count"):
        lines.append(f"  tokens ({Path(str(tl['tokenizer'])).name}, {tl['count']} examples checked): min {tl['min']}, "
                     f"median {tl['p50']}, p95 {tl['p95']}, max {tl['max']}; over max_length {tl['max_length']}: "
                     f"{tl['over_max_length']}")
        peak = max(b["count"] for b in tl["bins"])
        for b in tl["bins"]:
            lines.append(f"    {b['from']:>5}-{b['to'] - 1:<5} {'#' * max(1 if b['count'] else 0, round(30 * b['count'] / peak))} {b['count']}")
    if report.get("labels"):
        lab = report["labels"]
        lines.append("  labels: " + ", ".join(f"{k} {v}" for k, v in lab["counts"].items())
                     + f" (majority {lab['majority_share']:.0%})")
    dup = report["duplicates"]
    lines.append(f"  duplicates: exact {dup['exact']}, near {dup['near_pairs']} pairs, conflicting answers {dup['conflicting']}")
    if report["pii"]["counts"]:
        lines.append("  PII: " + ", ".join(f"{k} {v}" for k, v in report["pii"]["counts"].items())
                     + (" (redacted)" if report["pii"]["redacted"] else " (not redacted; use --redact-pii)"))
    n = report["problem_count"]
    lines.append(f"  problems: {n}" + (" (--strict fails on any)" if n else ""))
    for p in report["problems"][:10]:
        lines.append(f"    {p}")
    if n > 10:
        lines.append(f"    ... and {n - 10} more in quality.json")
    return "\n".join(lines)
