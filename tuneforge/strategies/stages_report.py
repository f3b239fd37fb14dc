"""The sequential report: a score matrix (rows: base and after each stage; columns: each stage's task),
what each stage gained on its own task, and what it cost on the earlier ones (forgetting).

Forgetting of task j after stage k is the score right after stage j minus the score after stage k
(positive = forgotten; for a loss, where lower is better, the sign is flipped so that positive still
means worse). Gained on stage k's task is its score after stage k minus the base model's score.

With ``eval.forgetting`` the matrix also has general-ability columns, measured on inputs outside every
stage's data: drift (KL of each model's next-token distributions from the base model's on general text
and chat) and the loss on reference answers of general instructions, each with its paired interval
against the base model (``summary["general"]``).
"""

from __future__ import annotations

from typing import Any

LOWER_IS_BETTER = ("ref_loss", "perplexity")


def _primary(row: Any) -> str | None:
    from tuneforge.strategies.common import primary_metric

    return primary_metric(row)


def forgetting_table(scores: dict[str, dict[str, Any]], tasks: list[str], after: list[str]) -> dict[str, Any]:
    """Everything the report shows, as plain JSON: ``scores[system][task]`` are eval result rows."""
    metrics: dict[str, list[str]] = {}
    for t in tasks:
        row = next((scores[s][t] for s in ["base", *after] if t in scores.get(s, {})), None)
        names = []
        if row is not None:
            primary = _primary(row)
            names = [m for m in (primary, "ref_loss") if m and m in row.metrics]
        metrics[t] = names
    matrix = {s: {t: {m: r.metrics[m].value for m in metrics[t] if m in r.metrics}
                  for t, r in scores.get(s, {}).items()} for s in ["base", *after]}

    def delta(m: str, new: float, old: float) -> float:
        return (old - new) if m in LOWER_IS_BETTER else (new - old)

    gained: dict[str, dict[str, float]] = {}
    forgotten: dict[str, dict[str, dict[str, float]]] = {}
    for k, system in enumerate(after):
        task = tasks[k]
        now = matrix.get(system, {})
        gained[system] = {m: delta(m, now[task][m], matrix["base"][task][m])
                          for m in metrics[task] if m in now.get(task, {}) and m in matrix["base"].get(task, {})}
        forgotten[system] = {}
        for j in range(k):
            earlier, right_after = tasks[j], matrix.get(after[j], {}).get(tasks[j], {})
            forgotten[system][earlier] = {m: -delta(m, now[earlier][m], right_after[m])
                                          for m in metrics[earlier] if m in now.get(earlier, {}) and m in right_after}
    return {"tasks": tasks, "metrics": metrics, "matrix": matrix, "gained": gained, "forgotten": forgotten}


GENERAL_COLUMNS = {"drift": "general drift from base (KL, nats/token)",
                   "general_loss": "general answers loss (lower is better)"}


def _general(general: dict[str, list[dict[str, Any]]], system: str, probe: str) -> dict[str, Any] | None:
    return next((d for d in general.get(system, []) if d["probe"] == probe), None)


def _general_cell(general: dict[str, list[dict[str, Any]]], system: str, probe: str) -> str:
    """A model's general-ability value with its paired interval against the base (the base row: its own)."""
    if system == "base":
        d = next((d for ds in general.values() for d in ds if d["probe"] == probe), None)
        return "" if d is None else _n(d["base"])
    d = _general(general, system, probe)
    if d is None:
        return ""
    ci = "" if d["ci_low"] is None else f" [{d['ci_low']:+.3f}, {d['ci_high']:+.3f}]"
    change = f"{d['tuned']:.3f}" + (f" ({d['delta']:+.3f}{ci})" if probe != "drift" else ci)
    return change + (" **flagged**" if d["flagged"] else "")


def _n(v: float | None) -> str:
    return "" if v is None else f"{v:.3f}"


def stages_markdown(summary: dict[str, Any]) -> str:
    table = summary["table"]
    tasks, metrics, matrix = table["tasks"], table["metrics"], table["matrix"]
    lines = ["# Sequential fine-tuning", "",
             "Scores on each stage's test set: the base model, then after each stage (a stage is scored on "
             "its own task and every earlier one).", ""]
    general = summary.get("general") or {}
    probes = [p for p in ("drift", "general_loss") if any(_general(general, s, p) for s in general)]
    header = [f"{t} {m}" + (" (lower is better)" if m in LOWER_IS_BETTER else "") for t in tasks for m in metrics[t]]
    header += [GENERAL_COLUMNS[p] for p in probes]
    lines += ["| model | " + " | ".join(header) + " |", "|---" * (len(header) + 1) + "|"]
    for system, by_task in matrix.items():
        cells = [_n(by_task.get(t, {}).get(m)) for t in tasks for m in metrics[t]]
        cells += [_general_cell(general, system, p) for p in probes]
        lines.append(f"| {system} | " + " | ".join(cells) + " |")
    lines += ["", "## Gained and forgotten, stage by stage", "",
              "Gained: score on the stage's own task minus the base model's. Forgotten: score on an earlier "
              "task right after its stage minus the score now (positive = forgotten).", ""]
    for st in summary["stages"]:
        system = f"after {st['stage']}"
        gained = ", ".join(f"{m} {v or 0.0:+.3f}" for m, v in table["gained"].get(system, {}).items()) or "n/a"
        lost = "; ".join(
            f"{t}: " + ", ".join(f"{m} {v or 0.0:+.3f}" for m, v in d.items())
            for t, d in table["forgotten"].get(system, {}).items()
        ) or "nothing earlier"
        replay = f", replay {st['replay']:.0%}" if st.get("replay") else ""
        lines.append(f"- **{st['stage']}** ({st['method']}, from {st['start_from']}{replay}; {st['steps']} steps, "
                     f"{st['train_examples']} examples): gained {gained}; forgotten {lost}")
        lines += [f"  - {d['reading']}" for d in general.get(system, [])]
    lines += ["", f"Final weights: `{summary['final_model']}`", ""]
    return "\n".join(lines)
