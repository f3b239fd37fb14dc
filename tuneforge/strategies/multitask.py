"""Multi-task training end to end: prepare each task, mix, train once, score every task.

``run_multitask(recipe, run)`` prepares each task of ``recipe.mixture`` into ``<run>/data/<task>/``
(every example tagged ``meta.task = <task name>``), draws the training mixture into
``<run>/data/mixture/train.jsonl``, keeps every task's validation examples (unweighted) in
``<run>/data/mixture/val.jsonl``, trains, and then reports per task: its share of the mixture, its
validation loss before and after training, and its test scores for the base and the tuned model
(``<run>/eval/results.json``, systems ``base`` and ``multitask``), and with ``eval.forgetting`` the
forgetting probes for both models (drift, general loss, behaviour and the multiple-choice benchmarks:
what mixing tasks must not cost). ``<run>/strategy.json`` and
``<run>/report.md`` hold the per-task and forgetting tables.
"""

from __future__ import annotations

import gc
from typing import TYPE_CHECKING, Any

from tuneforge import atomic
from tuneforge.errors import UserError
from tuneforge.strategies.common import (
    forgetting_suite,
    forgetting_summary,
    leave_room,
    load_tuned,
    prepare_training_files,
    primary_metric,
    probe_forgetting,
    score_tasks,
    write_json,
)

if TYPE_CHECKING:
    from tuneforge.config.recipe import Recipe
    from tuneforge.runs import Run


def run_multitask(recipe: Recipe, run: Run, model: Any = None, tokenizer: Any = None) -> dict[str, Any]:
    """Prepare, mix, train and score every task; returns (and writes) the per-task summary."""
    from tuneforge.eval.results import write_results
    from tuneforge.models import load_model, load_tokenizer
    from tuneforge.strategies.task_loss import task_losses
    from tuneforge.train import train

    if recipe.mixture is None:
        raise UserError("the recipe has no mixture section; list tasks under mixture.tasks (see examples/multitask.yaml)")
    tokenizer = tokenizer or load_tokenizer(recipe.model.name, recipe.model.trust_remote_code)
    files = prepare_training_files(recipe, run, tokenizer)
    base = model if model is not None else load_model(recipe.model)
    max_len = recipe.train.max_length
    val_before = task_losses(base, tokenizer, files.val, max_length=max_len) if files.val else {}
    suite = forgetting_suite(recipe, tokenizer, files.tasks)
    base_rows = score_tasks(base, tokenizer, files.tasks, recipe, "base") + probe_forgetting(base, suite, "base")
    for task, loss in val_before.items():
        run.log_metrics(step=0, split="val", task=task, loss=loss)

    # train() wraps the model it is given (PEFT layers are injected into it, in place): give it its own
    # copy, and keep a handle on it so each validation can also be scored task by task. The base rows are
    # scored: a base this function loaded is freed before training loads its own (the planner counts the
    # model it trains, nothing beside it); a caller's model stays in memory, so an explicit budget leaves
    # room for it.
    from tuneforge.train.methods import load_base_model

    if model is None:
        del base
        gc.collect()
        train_model = load_base_model(recipe)
    else:
        train_model = _copy(model)
        recipe = leave_room(recipe, model)
    # Prompt/prefix tuning keep their virtual tokens in the PEFT wrapper, not in the wrapped model.
    per_task = files.val is not None and not recipe.train.prompt_learning

    def on_eval(step: int, val_loss: float) -> bool:
        if per_task:
            for task, loss in task_losses(train_model, tokenizer, files.val, max_length=max_len).items():
                run.log_metrics(step=step, split="val", task=task, loss=loss)
        return False

    result = train(recipe, run, files.train, files.val, model=train_model, tokenizer=tokenizer, on_eval=on_eval)
    # The trained model holds the exported (best) weights and the base rows are scored: score it as it is
    # rather than load a second copy from the run folder beside it. A resumed run whose training had already
    # finished returns no model: its unused copy goes before the saved weights are read back.
    tuned, result.model, train_model = result.model, None, None
    if tuned is None:
        gc.collect()
        tuned = load_tuned(recipe, run.tuned_weights(required=True))
    tuned.eval()
    val_after = task_losses(tuned, tokenizer, files.val, max_length=max_len) if files.val else {}
    for task, loss in val_after.items():  # the exported (best) weights, which may predate the last step
        run.log_metrics(step=result.steps, split="val_final", task=task, loss=loss)
    tuned_rows = score_tasks(tuned, tokenizer, files.tasks, recipe, "multitask")
    tuned_rows += probe_forgetting(tuned, suite, "multitask")
    write_results(run.path, base_rows + tuned_rows)

    base_by, tuned_by = {r.task: r for r in base_rows}, {r.task: r for r in tuned_rows}
    shares = {s["task"]: s for s in files.shares}
    per_task = []
    for name, t in files.tasks.items():
        entry: dict[str, Any] = {"task": name, "splits": t.counts, "mixture": shares.get(name),
                                 "val_loss_before": val_before.get(name), "val_loss_after": val_after.get(name)}
        if name in tuned_by:
            metric = primary_metric(tuned_by[name])
            entry["metric"] = metric
            entry["base"] = base_by[name].metrics[metric].value if name in base_by and metric else None
            entry["tuned"] = tuned_by[name].metrics[metric].value if metric else None
        per_task.append(entry)
    summary = {"kind": "multitask", "strategy": recipe.mixture.strategy, "train": {
        "output_dir": str(result.output_dir), "steps": result.steps, "best_val_loss": result.best_val_loss,
        "initial_val_loss": result.initial_val_loss}, "tasks": per_task,
        "forgetting": forgetting_summary(base_rows + tuned_rows, recipe, "multitask")}
    write_json(run.path / "strategy.json", summary)
    atomic.write_text(run.path / "report.md", multitask_markdown(summary))
    return summary


def _copy(model: Any) -> Any:
    import copy

    return copy.deepcopy(model)


def _num(v: float | None, digits: int = 4) -> str:
    return "" if v is None else f"{v:.{digits}f}"


def multitask_markdown(summary: dict[str, Any]) -> str:
    lines = [f"# Multi-task run ({summary['strategy']} mixing)", "",
             "| task | train / val / test | in mixture | rate | repeats | val loss before | val loss after | metric | base | tuned |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for t in summary["tasks"]:
        m = t.get("mixture") or {}
        c = t["splits"]
        lines.append(
            f"| {t['task']} | {c.get('train', 0)} / {c.get('val', 0)} / {c.get('test', 0)} | {m.get('examples', '')} "
            f"| {m.get('rate', '')} | {m.get('repeats', '')} | {_num(t['val_loss_before'])} | {_num(t['val_loss_after'])} "
            f"| {t.get('metric') or ''} | {_num(t.get('base'), 3)} | {_num(t.get('tuned'), 3)} |"
        )
    tr = summary["train"]
    lines += ["", f"{tr['steps']} optimizer steps; best validation loss (all tasks) {_num(tr['best_val_loss'])}; "
              f"output {tr['output_dir']}", ""]
    if summary.get("forgetting"):
        lines += ["## Forgetting: base vs tuned on inputs outside the training data", "",
                  "| probe | measures | inputs | chance | base | tuned | tuned - base | 95% interval | detects | flagged |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        for f in summary["forgetting"]:
            ci = "" if f["ci_low"] is None else f"[{f['ci_low']:+.3f}, {f['ci_high']:+.3f}]"
            lines.append(f"| {f['probe']} | {f['label']} | {f['n']} | {_num(f.get('chance'), 2)} | {f['base']:.3f} "
                         f"| {f['tuned']:.3f} | {f['delta']:+.3f} | {ci} | {_num(f.get('detectable'), 3)} "
                         f"| {'yes' if f['flagged'] else 'no'} |")
        lines += ["", "Detects: the smallest true change these inputs find with probability eval.power (0.8 by "
                  "default). A probe whose base accuracy is near chance can only show a large drop.", ""]
        lines += [f"- {f['reading']}" for f in summary["forgetting"]] + [""]
    return "\n".join(lines)
