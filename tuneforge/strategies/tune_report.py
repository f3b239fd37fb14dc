"""The search's report: trial table and plots (inline SVG, no plotting library needed).

Written to ``<run>/tune/``: ``report.html`` (summary, plots, every trial), ``trials.json`` and one SVG
per plot: optimisation history, learning curves (validation loss per step, pruned trials included),
one slice plot per searched field (loss against the value) and the fields' importances.
"""

from __future__ import annotations

import html
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tuneforge import atomic
from tuneforge.secrets import redact_text
from tuneforge.strategies.common import write_json

if TYPE_CHECKING:
    import optuna

    from tuneforge.runs import Run


@dataclass
class TuneResult:
    """What one worker's search produced (the report's subject)."""

    study_name: str
    storage: str
    worker: str
    trials_run: int
    best_value: float | None
    best_params: dict[str, Any] = field(default_factory=dict)
    best_recipe: Path | None = None
    report: Path | None = None

W, H, PAD = 560, 300, 48
PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f"]


def _scale(lo: float, hi: float, a: float, b: float, log: bool = False):
    if log:
        lo, hi = math.log10(lo), math.log10(hi)
    span = (hi - lo) or 1.0

    def f(v: float) -> float:
        v = math.log10(v) if log else v
        return a + (v - lo) / span * (b - a)

    return f


def _fmt_pair(lo: float, hi: float) -> tuple[str, str]:
    """Axis end labels with just enough digits to tell them apart (losses differ in the 3rd decimal)."""
    for digits in range(3, 9):
        a, b = f"{lo:.{digits}g}", f"{hi:.{digits}g}"
        if a != b:
            return a, b
    return a, b


def svg_plot(series: list[dict[str, Any]], title: str, xlabel: str, ylabel: str, xlog: bool = False) -> str:
    """Lines and dots on shared axes. A series: {points: [(x, y)], kind: line|dots, color, label, hollow}."""
    pts = [p for s in series for p in s["points"]]
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="11">',
           f'<text x="{W / 2}" y="16" text-anchor="middle" font-size="13">{html.escape(title)}</text>']
    if not pts:
        out.append(f'<text x="{W / 2}" y="{H / 2}" text-anchor="middle">no finished trials yet</text></svg>')
        return "".join(out)
    xs, ys = [p[0] for p in pts], [p[1] for p in pts]
    if xlog and min(xs) <= 0:
        xlog = False
    sx = _scale(min(xs), max(xs), PAD, W - 16, xlog)
    sy = _scale(min(ys), max(ys), H - PAD, 28)
    out.append(f'<line x1="{PAD}" y1="{H - PAD}" x2="{W - 16}" y2="{H - PAD}" stroke="#444"/>')
    out.append(f'<line x1="{PAD}" y1="{H - PAD}" x2="{PAD}" y2="28" stroke="#444"/>')
    for v, label, anchor in zip((min(xs), max(xs)), _fmt_pair(min(xs), max(xs)), ("start", "end"), strict=True):
        out.append(f'<text x="{sx(v):.1f}" y="{H - PAD + 14}" text-anchor="{anchor}">{label}</text>')
    for v, label in zip((min(ys), max(ys)), _fmt_pair(min(ys), max(ys)), strict=True):
        out.append(f'<text x="{PAD - 4}" y="{sy(v) + 4:.1f}" text-anchor="end">{label}</text>')
    out.append(f'<text x="{W / 2}" y="{H - 12}" text-anchor="middle">{html.escape(xlabel)}{" (log)" if xlog else ""}</text>')
    out.append(f'<text x="12" y="{H / 2}" transform="rotate(-90 12 {H / 2})" text-anchor="middle">{html.escape(ylabel)}</text>')
    for i, s in enumerate(series):
        color = s.get("color", PALETTE[i % len(PALETTE)])
        coords = [(sx(x), sy(y)) for x, y in s["points"]]
        if s.get("kind", "line") == "line" and len(coords) > 1:
            path = " ".join(f"{x:.1f},{y:.1f}" for x, y in coords)
            width = s.get("width", 1.5)
            out.append(f'<polyline points="{path}" fill="none" stroke="{color}" stroke-width="{width}"/>')
        else:
            fill = "none" if s.get("hollow") else color
            out += [f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3.5" fill="{fill}" stroke="{color}"/>' for x, y in coords]
    labelled = [(s, PALETTE[i % len(PALETTE)]) for i, s in enumerate(series) if s.get("label")]
    for j, (s, default) in enumerate(labelled[:6]):
        y = 30 + 14 * j
        out.append(f'<rect x="{W - 150}" y="{y - 8}" width="10" height="10" fill="{s.get("color", default)}"/>')
        out.append(f'<text x="{W - 136}" y="{y + 1}">{html.escape(s["label"])}</text>')
    out.append("</svg>")
    return "".join(out)


def svg_bars(values: dict[str, float], title: str) -> str:
    rows = sorted(values.items(), key=lambda kv: kv[1], reverse=True)
    height = 40 + 22 * max(len(rows), 1)
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{height}" font-family="sans-serif" font-size="11">',
           f'<text x="{W / 2}" y="16" text-anchor="middle" font-size="13">{html.escape(title)}</text>']
    top = max((v for _, v in rows), default=1.0) or 1.0
    for i, (name, v) in enumerate(rows):
        y = 30 + 22 * i
        out.append(f'<text x="150" y="{y + 12}" text-anchor="end">{html.escape(name)}</text>')
        out.append(f'<rect x="156" y="{y}" width="{(W - 230) * v / top:.1f}" height="16" fill="{PALETTE[0]}"/>')
        out.append(f'<text x="{160 + (W - 230) * v / top:.1f}" y="{y + 12}">{v:.2f}</text>')
    out.append("</svg>")
    return "".join(out)


def plots(study: optuna.Study) -> dict[str, str]:
    """Every plot of the report as ``{file stem: svg}``."""
    import optuna

    state = optuna.trial.TrialState
    trials = study.get_trials(deepcopy=False)
    complete = [t for t in trials if t.state == state.COMPLETE]
    pruned = [t for t in trials if t.state == state.PRUNED and t.intermediate_values]
    best_so_far, best = [], math.inf
    for t in complete:
        best = min(best, t.value)
        best_so_far.append((t.number, best))
    out = {
        "history": svg_plot(
            [{"points": [(t.number, t.value) for t in complete], "kind": "dots", "label": "complete"},
             {"points": [(t.number, t.intermediate_values[max(t.intermediate_values)]) for t in pruned],
              "kind": "dots", "hollow": True, "color": "#999", "label": "pruned (last loss)"},
             {"points": best_so_far, "kind": "line", "color": "#d62728", "label": "best so far"}],
            "Optimisation history", "trial", "best validation loss",
        )
    }
    best_number = study.best_trial.number if complete else None
    curves = []
    for t in trials:
        if len(t.intermediate_values) < 1:
            continue
        pts = sorted(t.intermediate_values.items())
        is_best = t.number == best_number
        curves.append({"points": pts, "kind": "line" if len(pts) > 1 else "dots",
                       "color": "#d62728" if is_best else ("#bbb" if t.state == state.PRUNED else "#1f77b4"),
                       "width": 2.5 if is_best else 1.0, "label": f"best (trial {t.number})" if is_best else None})
    out["curves"] = svg_plot(curves, "Learning curves (grey: pruned)", "step", "validation loss")
    dists = complete[0].distributions if complete else {}
    for name, dist in dists.items():
        numeric = [(t.params[name], t.value) for t in complete
                   if name in t.params and isinstance(t.params[name], int | float) and not isinstance(t.params[name], bool)]
        if not numeric:
            continue
        out[f"slice-{name}"] = svg_plot([{"points": numeric, "kind": "dots"}], f"Slice: {name}", name,
                                        "best validation loss", xlog=bool(getattr(dist, "log", False)))
    if len(complete) >= 3 and len(dists) > 1:
        try:
            imp = optuna.importance.get_param_importances(study)
            out["importance"] = svg_bars(dict(imp), "Hyperparameter importance (fANOVA)")
        except (RuntimeError, ValueError) as exc:  # too few distinct values to fit
            out["importance"] = svg_bars({}, f"Importance unavailable: {exc}")
    return out


def _safe_url(url: str) -> str:
    # The shared helper also hides query-string secrets (?password=...), which SQLAlchemy's renderer keeps.
    return redact_text(url)


def trial_rows(study: optuna.Study) -> list[dict[str, Any]]:
    rows = []
    for t in study.get_trials(deepcopy=False):
        duration = (t.datetime_complete - t.datetime_start).total_seconds() if t.datetime_complete and t.datetime_start else None
        rows.append({"number": t.number, "state": t.state.name.lower(), "value": t.value, "params": t.params,
                     "last_step": max(t.intermediate_values) if t.intermediate_values else None,
                     "worker": t.user_attrs.get("worker"), "run": t.user_attrs.get("run"), "seconds": duration})
    return rows


def _row_html(r: dict[str, Any]) -> str:
    value = "" if r["value"] is None else f"{r['value']:.4f}"
    seconds = "" if r["seconds"] is None else f"{r['seconds']:.0f}"
    cells = (r["number"], r["state"], value, "" if r["last_step"] is None else r["last_step"], r["params"],
             r["worker"] or "", seconds)
    return "<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in cells) + "</tr>"


def write_report(study: optuna.Study, run: Run, result: TuneResult) -> Path:
    """``<run>/tune/report.html`` plus the plots as SVG files and ``trials.json``."""
    folder = run.path / "tune"
    folder.mkdir(parents=True, exist_ok=True)
    figures = plots(study)
    for stem, svg in figures.items():
        atomic.write_text(folder / f"{stem}.svg", svg)
    rows = trial_rows(study)
    write_json(folder / "trials.json", {"study": result.study_name, "storage": _safe_url(result.storage),
                                        "best_value": result.best_value, "best_params": result.best_params,
                                        "trials": rows})
    states: dict[str, int] = {}
    for r in rows:
        states[r["state"]] = states.get(r["state"], 0) + 1
    workers = sorted({r["worker"] for r in rows if r["worker"]})
    head = "".join(f"<th>{h}</th>" for h in ("trial", "state", "best val loss", "last step", "params", "worker", "s"))
    body = "".join(_row_html(r) for r in rows)
    best = (f"<p>Best validation loss <b>{result.best_value:.4f}</b> with <code>{html.escape(str(result.best_params))}</code>; "
            f"ready recipe: <code>{html.escape(str(result.best_recipe))}</code></p>") if result.best_value is not None else "<p>No complete trial yet.</p>"
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>tune: {html.escape(result.study_name)}</title>
<style>body{{font-family:sans-serif;max-width:1200px;margin:2em auto}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:3px 6px;font-size:13px}}.plots svg{{margin:6px;border:1px solid #eee}}</style></head><body>
<h1>Hyperparameter search: {html.escape(result.study_name)}</h1>
<p>Storage <code>{html.escape(_safe_url(result.storage))}</code>; {len(rows)} trials
({", ".join(f"{n} {s}" for s, n in sorted(states.items()))}) from {len(workers)} worker(s); this worker ran {result.trials_run}.</p>
{best}<div class="plots">{"".join(figures.values())}</div>
<h2>Trials</h2><table><tr>{head}</tr>{body}</table></body></html>"""
    path = folder / "report.html"
    return atomic.write_text(path, page)
