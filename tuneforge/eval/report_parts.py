"""The parts of a run's evaluation that both the HTML report and `tuneforge ui`'s run page show.

Each function reads or formats one part as plain data (strings already formatted), so the report's HTML
(:mod:`tuneforge.eval.report`) and the UI's template render the same numbers: the forgetting table
(:func:`forgetting_rows`), answers side by side (:func:`side_by_side_examples`), the data quality report
(:func:`data_quality`) and the token-length histogram (:func:`length_histogram`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tuneforge.eval import svg
from tuneforge.eval.forgetting import ForgettingDelta
from tuneforge.eval.forgetting_reading import near_chance, reading
from tuneforge.eval.verdict import Verdict
from tuneforge.runs import DATA

QUALITY_FILE = "quality.json"


@dataclass(frozen=True)
class ForgettingRow:
    """One probe's base vs tuned, formatted: what the report's and the UI's forgetting tables show."""

    probe: str
    measures: str
    base: str
    tuned: str
    change: str
    interval: str  # "[low, high]" of the paired bootstrap, or "-" where the probe has none
    n: int
    detects: str
    needed: str
    flag: str  # "flagged", "near chance", "ok" or "(not judged)"
    reading: str  # the change in plain words


def fmt_change(d: ForgettingDelta, v: float | None, signed: bool = True) -> str:
    if v is None:
        return "-"
    if d.metric in ("label_answers", "repeated_answer", "short_answers"):
        return f"{v * 100:+.0f} pts" if signed else f"{v:.0%}"
    if d.metric == "mean_words":
        return f"{v:+.1f}" if signed else f"{v:.1f}"
    return f"{v:+.3f}" if signed else f"{v:.3f}"


def _flag(d: ForgettingDelta) -> str:
    if d.flagged:
        return "flagged"
    if near_chance(d):
        return "near chance"
    return "ok" if d.worse else "(not judged)"


def forgetting_rows(verdict: Verdict) -> list[ForgettingRow]:
    """The verdict's forgetting deltas as table rows (empty when base and tuned were not both probed)."""
    return [ForgettingRow(
        probe=d.probe, measures=d.label, base=fmt_change(d, d.base, False), tuned=fmt_change(d, d.tuned, False),
        change=fmt_change(d, d.delta),
        interval=f"[{fmt_change(d, d.ci_low)}, {fmt_change(d, d.ci_high)}]" if d.ci_low is not None else "-",
        n=d.n, detects=fmt_change(d, d.detectable, signed=False) if d.detectable is not None else "-",
        needed=f"{d.needed:,}" if d.needed is not None else "-", flag=_flag(d), reading=reading(d),
    ) for d in verdict.forgetting]


@dataclass
class Example:
    """One test example and every system's answer to it."""

    id: str
    task: str
    prompt: str
    reference: str
    answers: list[tuple[str, str]] = field(default_factory=list)  # (system, prediction), in system order


def side_by_side_examples(preds: dict[str, list[dict[str, Any]]], n: int, prompt_chars: int = 1500) -> list[Example]:
    """The first ``n`` examples of the first system's predictions, each with every system's answer."""
    if not preds or n <= 0:
        return []
    by = {s: {str(r["id"]): r for r in recs} for s, recs in preds.items()}
    first = next(iter(by.values()))
    out = []
    for rid in [str(r["id"]) for r in next(iter(preds.values()))[:n]]:
        r0 = first[rid]
        out.append(Example(rid, str(r0.get("task")), str(r0.get("prompt", ""))[:prompt_chars],
                           str(r0.get("reference", "")),
                           [(s, str(recs[rid]["prediction"])) for s, recs in by.items() if rid in recs]))
    return out


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def quality_files(run_path: Path) -> list[tuple[str, Path]]:
    """(name, path) of the run's data quality reports: ``data/quality.json`` (named ``data``), then one per
    task of a multi-task run (``data/<task>/quality.json``, named by the task)."""
    data = Path(run_path) / DATA
    found = [("data", data / QUALITY_FILE)] if (data / QUALITY_FILE).is_file() else []
    found += [(p.parent.name, p) for p in sorted(data.glob(f"*/{QUALITY_FILE}"))]
    return found


def data_quality(path: Path) -> dict[str, Any] | None:
    """One quality.json (what `tuneforge data prepare` wrote) as what a page shows: rows read and kept,
    drops, label balance, token-length bins, and each problem as ``file:line: field: message``."""
    report = _read_json(path)
    if not isinstance(report, dict) or not isinstance(report.get("counts"), dict):
        return None  # not a report `data prepare` wrote
    counts = report.get("counts") or {}
    labels = report.get("labels") or {}
    lengths = report.get("token_lengths") or {}
    total = sum(labels.get("counts", {}).values()) if labels.get("counts") else 0
    return {
        "rows": counts.get("rows"), "kept": counts.get("kept"), "dropped": report.get("dropped") or {},
        "labels": [(k, v, f"{v / total:.0%}") for k, v in (labels.get("counts") or {}).items()] if total else [],
        "majority_share": labels.get("majority_share"),
        "lengths": lengths if lengths.get("count") else None,
        "problem_count": int(report.get("problem_count") or 0),
        "problems": [str(p) for p in report.get("problems") or []],
        "duplicates": report.get("duplicates") or {},
    }


def find_histogram(node: Any) -> tuple[list[float], list[int]] | None:
    """The first {edges|bins|bin_edges, counts} pair anywhere in a JSON document."""
    if isinstance(node, dict):
        counts = node.get("counts")
        edges = node.get("edges") or node.get("bin_edges") or node.get("bins")
        if isinstance(counts, list) and isinstance(edges, list) and len(edges) == len(counts) + 1:
            return [float(e) for e in edges], [int(c) for c in counts]
        for key in sorted(node, key=lambda k: "token" not in str(k)):  # prefer token-length entries
            found = find_histogram(node[key])
            if found:
                return found
    elif isinstance(node, list):
        for item in node:
            found = find_histogram(item)
            if found:
                return found
    return None


def length_histogram(run_path: Path, preds: dict[str, list[dict[str, Any]]]) -> str:
    """An SVG histogram of the prepared data's token lengths (``data/quality.json``), else of the
    zero-shot test prompts' lengths; "" when neither is there."""
    found = find_histogram(_read_json(Path(run_path) / DATA / QUALITY_FILE))
    if found:
        return svg.histogram(*found, title="Token lengths of the prepared data (data/quality.json)",
                             x_label="tokens per example")
    recs = preds.get("base zero-shot") or preds.get("tuned") or next(iter(preds.values()), [])
    lengths = [r["prompt_tokens"] for r in recs if isinstance(r.get("prompt_tokens"), int)]
    if not lengths:
        return ""
    lo, hi = min(lengths), max(lengths)
    bins = min(20, max(1, hi - lo + 1))
    step = max((hi - lo + 1) / bins, 1)
    edges = [lo + i * step for i in range(bins + 1)]
    counts = [0] * bins
    for n in lengths:
        counts[min(int((n - lo) / step), bins - 1)] += 1
    return svg.histogram(edges, counts, title="Prompt tokens per test request (zero-shot)", x_label="tokens")
