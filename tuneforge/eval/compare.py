"""`tuneforge compare`: one table of every metric across runs and systems, and answers side by side.

Systems are whatever the runs' ``eval/results.json`` hold: ``base zero-shot``, ``base k-shot``,
``tuned``, RAG rows, forgetting probes. Test-split rows come first, forgetting probes after.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tuneforge.errors import UserError
from tuneforge.eval.forgetting import TASK_PREFIX
from tuneforge.eval.results import MetricValue, ResultRow, read_results

METRIC_ORDER = ("accuracy", "answer_accuracy", "exact_match", "token_f1", "rouge_l", "bleu", "chrf", "ref_loss", "perplexity")
PRIMARY_ORDER = ("accuracy", "answer_accuracy", "token_f1", "rouge_l", "chrf", "bleu", "exact_match")


def fmt_metric(m: MetricValue | None, digits: int = 3) -> str:
    if m is None:
        return "-"
    if m.ci_low is None or m.ci_high is None:
        return f"{m.value:.{digits}f}"
    return f"{m.value:.{digits}f} [{m.ci_low:.{digits}f}, {m.ci_high:.{digits}f}]"


def primary_metric(rows: list[ResultRow]) -> str | None:
    """The metric a verdict is based on: accuracy for classification, else token F1, ROUGE-L, ..."""
    names = {k for r in rows for k in r.metrics}
    return next((m for m in PRIMARY_ORDER if m in names), None)


def is_probe(row: ResultRow) -> bool:
    return row.task.startswith(TASK_PREFIX) or row.extra.get("kind") == "forgetting"


def _render_table(header: list[str], body: list[list[str]]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *body]) for i in range(len(header))]
    line = "  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True))
    sep = "  ".join("-" * w for w in widths)
    rows = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in body]
    return "\n".join([line, sep, *rows])


def load_runs(paths: list[str | Path]) -> list[tuple[str, list[ResultRow]]]:
    out = []
    for p in paths:
        path = Path(p)
        rows = read_results(path)
        if not path.exists():
            raise UserError(f"{path}: run folder not found")
        if not rows:
            raise UserError(f"{path}: no evaluation results (eval/results.json); run `tuneforge eval` on it first")
        out.append((path.name, rows))
    return out


def compare_runs(paths: list[str | Path]) -> str:
    """A text table: one line per (run, system, task), one column per metric, with intervals."""
    runs = load_runs(paths)
    all_rows = [r for _, rows in runs for r in rows]
    metrics = [m for m in METRIC_ORDER if any(m in r.metrics for r in all_rows)]
    metrics += sorted({k for r in all_rows for k in r.metrics} - set(metrics))
    header = ["run", "system", "task", *metrics, "prompt tok/req"]
    body = []
    for probes in (False, True):
        for name, rows in runs:
            for r in rows:
                if is_probe(r) != probes:
                    continue
                tok = f"{r.prompt_tokens_per_request:.0f}" if r.prompt_tokens_per_request is not None else "-"
                body.append([name, r.system, r.task, *[fmt_metric(r.metrics.get(m)) for m in metrics], tok])
    text = _render_table(header, body)
    notes = ["", "values: mean [95% bootstrap interval]; overlapping intervals mean the difference may be noise"]
    deltas = forgetting_lines(runs)
    return "\n".join([text, *notes, *deltas])


def forgetting_lines(runs: list[tuple[str, list[ResultRow]]]) -> list[str]:
    from tuneforge.eval.forgetting import compare_forgetting

    lines = []
    for name, rows in runs:
        for d in compare_forgetting(rows):
            ci = f"[{d.ci_low:+.3f}, {d.ci_high:+.3f}]" if d.ci_low is not None else ""
            flag = "  FLAGGED" if d.flagged else ""
            probe = f"{d.probe} {d.metric}" if d.probe == "behaviour" else d.probe
            lines.append(f"{name}: forgetting {probe}: base {d.base:.3f} -> tuned {d.tuned:.3f} "
                         f"(delta {d.delta:+.3f} {ci}, n={d.n}){flag}")
    return [""] + lines if lines else []


def collect_predictions(path: str | Path) -> dict[str, list[dict[str, Any]]]:
    """system -> per-example predictions of one run (from ``eval/predictions-*.jsonl``)."""
    from tuneforge.eval.evaluate import read_predictions

    out: dict[str, list[dict[str, Any]]] = {}
    for f in sorted((Path(path) / "eval").glob("predictions-*.jsonl")):
        recs = read_predictions(f)
        if recs:
            out[str(recs[0].get("system", f.stem[len("predictions-"):]))] = recs
    return out


def side_by_side(paths: list[str | Path], n: int = 3, ids: list[str] | None = None) -> str:
    """The same test prompts answered by every system of every run."""
    systems: dict[str, dict[str, dict[str, Any]]] = {}
    order: list[str] = []
    for p in paths:
        for system, recs in collect_predictions(p).items():
            label = f"{Path(p).name} / {system}" if len(paths) > 1 else system
            systems[label] = {str(r["id"]): r for r in recs}
            for r in recs:
                if str(r["id"]) not in order:
                    order.append(str(r["id"]))
    if not systems:
        return "(no predictions to show)"
    chosen = [i for i in (ids or order[:n]) if any(i in s for s in systems.values())]
    out = []
    for i in chosen:
        first = next(s[i] for s in systems.values() if i in s)
        out.append(f"=== {i} ({first.get('task')}) ===")
        out.append(f"prompt:    {_short(first.get('prompt', ''), 300)}")
        out.append(f"reference: {_short(first.get('reference', ''), 200)}")
        width = max(len(k) for k in systems)
        for label, recs in systems.items():
            if i in recs:
                out.append(f"  {label.ljust(width)} | {_short(recs[i]['prediction'], 200) or '(empty answer)'}")
        out.append("")
    return "\n".join(out)


def _short(text: str, n: int) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= n else text[: n - 3] + "..."
