"""`write_report`: one self-contained HTML file per run (inline SVG and CSS, opens offline).

Sources, all optional except the run folder itself: ``recipe.yaml``, ``metrics.jsonl`` (training and
validation loss), ``eval/results.json`` and ``eval/predictions-*.jsonl``, ``data/quality.json`` (its
token-length histogram, label balance and problems). The forgetting table, the answers side by side and
the data quality come from :mod:`tuneforge.eval.report_parts`, which `tuneforge ui`'s run page uses too.
"""

from __future__ import annotations

import json
import math
from html import escape
from pathlib import Path
from typing import Any

import yaml

from tuneforge import atomic
from tuneforge.config.eval import EvalConfig
from tuneforge.config.recipe import RunConfig
from tuneforge.errors import UserError
from tuneforge.eval import svg
from tuneforge.eval.compare import METRIC_ORDER, collect_predictions, fmt_metric, is_probe, primary_metric
from tuneforge.eval.report_parts import (
    data_quality,
    forgetting_rows,
    length_histogram,
    quality_files,
    side_by_side_examples,
)
from tuneforge.eval.results import ResultRow, read_results
from tuneforge.eval.verdict import Verdict, decide
from tuneforge.runs import METRICS, RECIPE, tuned_weights_in

CSS = """
body{font-family:system-ui,sans-serif;max-width:980px;margin:2em auto;padding:0 1em;color:#222}
h1{margin-bottom:0}.sub{color:#666;margin-top:.2em}
table{border-collapse:collapse;margin:.6em 0;font-size:14px}th,td{border:1px solid #ddd;padding:4px 8px;text-align:left}
th{background:#f4f4f4}td.num{text-align:right;font-variant-numeric:tabular-nums}
.verdict{border-left:6px solid #888;padding:.6em 1em;background:#f8f8f8}
.yes{border-color:#2e7d32}.no{border-color:#c62828}.warn{border-color:#ef6c00}
.drop{color:#c62828;font-weight:bold}.ex{border:1px solid #ddd;padding:.5em;margin:.5em 0}
.ex pre{white-space:pre-wrap;margin:.2em 0}.muted{color:#777}
"""


def _training_curves(run_path: Path) -> str:
    f = run_path / METRICS
    if not f.is_file():
        return ""
    series: dict[str, list[tuple[float, float]]] = {}
    for n, line in enumerate(f.read_text(encoding="utf-8").splitlines()):
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        split, loss = row.get("split"), row.get("loss")
        if split in ("train", "val") and isinstance(loss, int | float) and math.isfinite(loss):
            name = f"{split} loss" + (f" ({row['task']})" if row.get("task") else "")  # multi-task: one curve each
            series.setdefault(name, []).append((float(row.get("step", n)), float(loss)))
    return svg.line_chart(series, title="Training and validation loss", y_label="loss") if series else ""


def _metric_table(rows: list[ResultRow]) -> str:
    metrics = [m for m in METRIC_ORDER if any(m in r.metrics for r in rows)]
    metrics += sorted({k for r in rows for k in r.metrics} - set(metrics))
    head = "".join(f"<th>{escape(m)}</th>" for m in metrics)
    body = []
    for r in rows:
        cells = "".join(f'<td class="num">{fmt_metric(r.metrics.get(m))}</td>' for m in metrics)
        tok = f"{r.prompt_tokens_per_request:.0f}" if r.prompt_tokens_per_request is not None else "-"
        n = next((v.n for v in r.metrics.values() if v.n), "-")
        body.append(f"<tr><td>{escape(r.system)}</td><td>{escape(r.task)}</td>{cells}"
                    f'<td class="num">{tok}</td><td class="num">{n}</td></tr>')
    return (f"<table><tr><th>system</th><th>task</th>{head}<th>prompt tokens/request</th><th>n</th></tr>"
            + "".join(body) + "</table>")


def _per_task(rows: list[ResultRow]) -> str:
    parts = []
    for r in rows:
        per = r.extra.get("per_task") or {}
        for task, metrics in per.items():
            cells = ", ".join(f"{k} {fmt_metric(_mv(v))}" for k, v in metrics.items())
            parts.append(f"<tr><td>{escape(r.system)}</td><td>{escape(task)}</td><td>{escape(cells)}</td></tr>")
    if not parts:
        return ""
    return "<h3>Per task</h3><table><tr><th>system</th><th>task</th><th>metrics</th></tr>" + "".join(parts) + "</table>"


def _mv(d: dict[str, Any]):
    from tuneforge.eval.results import MetricValue

    return MetricValue(**d)


def _forgetting_section(v: Verdict, rows: list[ResultRow]) -> str:
    if not v.forgetting:
        probes = [r for r in rows if is_probe(r)]
        if probes:
            return "<h2>Forgetting</h2>" + _metric_table(probes) + "<p class='muted'>Only one side (base or tuned) was probed.</p>"
        return ("<h2>Forgetting</h2><p class='muted'>Not measured: the run has no tuned model or "
                "<code>eval.forgetting</code> is off.</p>")
    body = []
    for f in forgetting_rows(v):
        flag = '<span class="drop">flagged</span>' if f.flag == "flagged" else escape(f.flag)
        body.append(f'<tr><td>{escape(f.probe)}</td><td>{escape(f.measures)}</td>'
                    + "".join(f'<td class="num">{escape(str(x))}</td>'
                              for x in (f.base, f.tuned, f.change, f.interval, f.n, f.detects, f.needed))
                    + f"<td>{flag}</td></tr>")
    readings = "".join(f"<li>{escape(f.reading)}</li>" for f in forgetting_rows(v))
    accuracy = [d for d in v.forgetting if d.metric == "accuracy"]
    chart = svg.bar_chart(
        [d.probe for d in accuracy], [d.delta for d in accuracy], [d.ci_low for d in accuracy],
        [d.ci_high for d in accuracy], title="Accuracy change on multiple-choice probes (tuned - base)",
        colors=["#c62828" if d.flagged else "#4c78a8" for d in accuracy],
    ) if accuracy else ""
    return ("<h2>Forgetting</h2><p>Probes outside the fine-tuning data, the same inputs for base and tuned, so "
            "every change gets a paired bootstrap interval. <b>Drift</b>: KL divergence of the tuned from the base "
            "next-token distributions on Wikipedia prose and human conversations. <b>General loss</b>: loss on "
            "reference answers of general instructions. <b>Behaviour</b>: answers generated for general prompts. "
            "<b>Multiple choice</b>: benchmark questions answered by log-likelihood. A change is flagged when its "
            "whole interval lies on the worse side (drift: above its flag level). <i>Detects</i> is the smallest "
            "true change the sample finds 80% of the time; <i>needed</i> is how many inputs the observed change "
            "would need to be shown.</p>"
            "<table><tr><th>probe</th><th>measures</th><th>base</th><th>tuned</th><th>change</th>"
            "<th>95% interval</th><th>n</th><th>detects</th><th>needed</th><th></th></tr>" + "".join(body)
            + "</table><h3>In plain words</h3><ul>" + readings + "</ul>" + chart)


def _examples(preds: dict[str, list[dict[str, Any]]], n: int) -> str:
    examples = side_by_side_examples(preds, n)
    if not examples:
        return ""
    parts = ["<h2>Side by side</h2>"]
    for ex in examples:
        rows = "".join(f"<tr><td>{escape(s)}</td><td>{escape(p)}</td></tr>" for s, p in ex.answers)
        parts.append(f'<div class="ex"><b>{escape(ex.id)}</b> <span class="muted">({escape(ex.task)})</span>'
                     f"<pre>{escape(ex.prompt)}</pre><b>reference:</b> {escape(ex.reference)}<table>{rows}</table></div>")
    return "".join(parts)


def _quality_section(run_path: Path) -> str:
    """Each data quality report's label balance and problems (file:line: field: message)."""
    parts = []
    for name, path in quality_files(run_path):
        q = data_quality(path)
        if q is None:
            continue
        labels = ", ".join(f"{escape(str(k))} {v} ({share})" for k, v, share in q["labels"]) or "-"
        problems = "".join(f"<li><code>{escape(p)}</code></li>" for p in q["problems"])
        more = q["problem_count"] - len(q["problems"])
        parts.append(f"<h3>{escape(name)}</h3><p>{q['rows']} rows read, {q['kept']} kept; labels: {labels}; "
                     f"problems: {q['problem_count']}</p>" + (f"<ul>{problems}</ul>" if problems else "")
                     + (f"<p class='muted'>... and {more} more in quality.json</p>" if more > 0 else ""))
    return "<h2>Data quality</h2>" + "".join(parts) if parts else ""


def _eval_setting(recipe: dict[str, Any], name: str) -> Any:
    """``eval.<name>`` of a run's saved recipe, or the schema's default when the recipe leaves it out: the
    saved recipe is read as data (an older run's may lack a newer field), the defaults live in one place."""
    ev = recipe.get("eval") or {}
    value = ev.get(name) if isinstance(ev, dict) else None
    return EvalConfig.model_fields[name].default if value is None else value


def run_verdict(run_path: Path, rows: list[ResultRow], recipe: dict[str, Any]) -> Verdict:
    """The run's verdict with the recipe's eval settings: what the report shows (and `tuneforge ui`)."""
    def setting(name: str) -> Any:
        return _eval_setting(recipe, name)

    return decide(run_path, rows, samples=int(setting("bootstrap_samples")),
                  confidence=float(setting("confidence")), margin=float(setting("forgetting_drop")),
                  seed=int((recipe.get("run") or {}).get("seed", RunConfig.model_fields["seed"].default)),
                  drift_threshold=float(setting("drift_threshold")), power=float(setting("power")),
                  behaviour_margin=float(setting("behaviour_margin")))


def write_report(run_path: str | Path) -> Path:
    """Write ``<run>/report.html`` and return its path."""
    run_path = Path(run_path)
    if not run_path.is_dir():
        raise UserError(f"{run_path}: run folder not found")
    recipe: dict[str, Any] = {}
    if (run_path / RECIPE).is_file():
        recipe = yaml.safe_load((run_path / RECIPE).read_text(encoding="utf-8")) or {}
    rows = read_results(run_path)
    preds = collect_predictions(run_path)
    verdict = run_verdict(run_path, rows, recipe)
    test = [r for r in rows if not is_probe(r)]
    metric = primary_metric(test)
    css_class = {"yes": "yes", "no": "no", "yes, but": "warn"}.get(verdict.answer, "")
    model = (recipe.get("model") or {}).get("name", "?")
    train = recipe.get("train") or {}
    has_tuned = tuned_weights_in(run_path) is not None
    method = train.get("method") if isinstance(train, dict) and has_tuned else None
    html = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>tuneforge report: {escape(run_path.name)}</title><style>{CSS}</style></head><body>",
        f"<h1>{escape(run_path.name)}</h1>",
        f"<p class='sub'>base model <code>{escape(str(model))}</code>"
        + (f", method <code>{escape(str(method))}</code>" if method else "")
        + (", tuned weights in this run" if has_tuned else ", no tuned weights in this run") + "</p>",
        "<h2>Was fine-tuning worth it?</h2>",
        f"<div class='verdict {css_class}'><p><b>{escape(verdict.headline)}</b></p><ul>"
        + "".join(f"<li>{escape(line)}</li>" for line in verdict.lines) + "</ul></div>",
    ]
    if test:
        html.append("<h2>Test split</h2><p>Mean with a 95% bootstrap interval; overlapping intervals mean a "
                    "difference may be noise.</p>" + _metric_table(test))
        if metric:
            chosen = [r for r in test if metric in r.metrics]
            several = len({r.task for r in chosen}) > 1
            html.append(svg.bar_chart(
                [f"{r.system} ({r.task})" if several else r.system for r in chosen], [r.metrics[metric].value for r in chosen],
                [r.metrics[metric].ci_low for r in chosen], [r.metrics[metric].ci_high for r in chosen],
                title=f"{metric} on the test split",
                domain=(0.0, 1.0) if metric in ("accuracy", "exact_match", "token_f1", "rouge_l") else None,
            ))
        html.append(_per_task(test))
    html.append(_forgetting_section(verdict, rows))
    curves = _training_curves(run_path)
    html.append("<h2>Training</h2>" + (curves or "<p class='muted'>No training in this run (baseline only).</p>"))
    hist = length_histogram(run_path, preds)
    if hist:
        html.append("<h2>Token lengths</h2>" + hist)
    html.append(_quality_section(run_path))
    html.append(_examples(preds, int(_eval_setting(recipe, "compare_examples"))))
    html.append("<hr><p class='muted'>Generated by tuneforge. Recipe: <code>recipe.yaml</code>; "
                "numbers: <code>eval/results.json</code>.</p></body></html>")
    out = run_path / "report.html"
    atomic.write_text(out, "\n".join(h for h in html if h))
    return out
