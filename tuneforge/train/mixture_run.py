"""Multi-task training end to end: prepare each task, mix, train once, score every task.

``run_multitask(recipe, run)`` prepares each task of ``recipe.mixture`` into ``<run>/data/<task>/``
(every example tagged ``meta.task = <task name>``), draws the training mixture into
``<run>/data/mixture/train.jsonl``, keeps every task's validation examples (unweighted) in
``<run>/data/mixture/val.jsonl``, trains, and then reports per task: its share of the mixture, its
validation loss before and after training, and its test scores for the base and the tuned model
(``<run>/eval/results.json``, systems ``base`` and ``multitask``), and with ``eval.forgetting`` the
general-ability probes for both models (what mixing tasks must not cost). ``<run>/strategy.json`` and
``<run>/report.md`` hold the per-task and forgetting tables.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tuneforge import atomic
from tuneforge.errors import UserError
from tuneforge.train.mixture import concat_tagged, mix_files, read_jsonl, shares_table, tag, write_jsonl
from tuneforge.train.stages_common import write_json

if TYPE_CHECKING:
    from tuneforge.config.recipe import Recipe
    from tuneforge.data.config import DataConfig
    from tuneforge.eval.results import ResultRow
    from tuneforge.runs import Run

log = logging.getLogger(__name__)


@dataclass
class TaskFiles:
    """One task's prepared splits (every example tagged with the task name)."""

    name: str
    train: Path
    val: Path
    test: Path
    counts: dict[str, int] = field(default_factory=dict)


def prepare_task(name: str, data: DataConfig, folder: Path, tokenizer: Any, seed: int) -> TaskFiles:
    """Prepare one task's data with the data stage, then tag every split with the task name."""
    from tuneforge.data.prepare import prepare_data

    prepared = prepare_data(data, folder, tokenizer=tokenizer, seed=seed)
    counts = {}
    for split in ("train", "val", "test"):
        path = getattr(prepared, split)
        rows = read_jsonl(path) if path.is_file() else []
        write_jsonl(path, tag(rows, name))
        counts[split] = len(rows)
    if counts["train"] == 0:
        raise UserError(f"task {name}: data {data.path} left no training examples")
    return TaskFiles(name, prepared.train, prepared.val, prepared.test, counts)


@dataclass
class TrainingFiles:
    """What a training strategy trains and scores on."""

    train: Path
    val: Path | None
    tasks: dict[str, TaskFiles]
    shares: list[dict[str, Any]] = field(default_factory=list)


def prepare_training_files(recipe: Recipe, run: Run, tokenizer: Any) -> TrainingFiles:
    """A mixture of ``recipe.mixture``'s tasks, or ``recipe.data`` alone as one task (for ``tune``)."""
    seed = recipe.run.seed
    data_dir = run.path / "data"
    if recipe.mixture is not None:
        tasks = {t.name: prepare_task(t.name, t.data, data_dir / t.name, tokenizer, seed) for t in recipe.mixture.tasks}
        train, shares = mix_files({n: t.train for n, t in tasks.items()}, data_dir / "mixture" / "train.jsonl",
                                  recipe.mixture, seed)
        with_val = {n: t.val for n, t in tasks.items() if t.counts["val"]}
        val = concat_tagged(with_val, data_dir / "mixture" / "val.jsonl") if with_val else None
        run.add_inputs([t.train for t in tasks.values()] + [t.val for t in tasks.values()])
        return TrainingFiles(train, val, tasks, shares_table(shares))
    if recipe.data is not None:
        name = recipe.data.template or "task"
        task = prepare_task(name, recipe.data, data_dir, tokenizer, seed)
        return TrainingFiles(task.train, task.val if task.counts["val"] else None, {name: task})
    raise UserError("the recipe needs a data section or a mixture section with tasks (see examples/multitask.yaml)")


def score_tasks(model: Any, tokenizer: Any, tasks: dict[str, TaskFiles], recipe: Recipe, system: str) -> list[ResultRow]:
    """One result row per task (its own test split), as the eval stage scores them."""
    from tuneforge.eval.evaluate import evaluate_split, pop_predictions

    rows = []
    for name, t in tasks.items():
        if not t.counts.get("test"):
            log.warning("task %s has no test examples; not scored", name)
            continue
        row = evaluate_split(model, tokenizer, t.test, system=system, cfg=recipe.eval,
                             max_examples=recipe.eval.max_examples, seed=recipe.run.seed)
        pop_predictions(row)
        row.task = name
        rows.append(row)
    return rows


def primary_metric(row: ResultRow) -> str | None:
    """The score a report leads with: accuracy when the task has labels, else the first generation metric."""
    for name in ("accuracy", "token_f1", "rouge_l", "chrf", "exact_match"):
        if name in row.metrics:
            return name
    return next(iter(row.metrics), None)


def load_trained(recipe: Recipe, output_dir: Path, method: str):
    """The model a training run produced: base + adapter (PEFT) or the saved full model."""
    from tuneforge.models import load_model
    from tuneforge.train.methods import is_peft

    if is_peft(method):
        return load_model(recipe.model.model_copy(update={"adapter": str(output_dir)}))
    return load_model(recipe.model.model_copy(update={"name": str(output_dir), "adapter": None}))


def run_multitask(recipe: Recipe, run: Run, model: Any = None, tokenizer: Any = None) -> dict[str, Any]:
    """Prepare, mix, train and score every task; returns (and writes) the per-task summary."""
    from tuneforge.eval.results import write_results
    from tuneforge.models import load_model, load_tokenizer
    from tuneforge.train import train
    from tuneforge.train.mixture_loss import task_losses

    if recipe.mixture is None:
        raise UserError("the recipe has no mixture section; list tasks under mixture.tasks (see examples/multitask.yaml)")
    tokenizer = tokenizer or load_tokenizer(recipe.model.name, recipe.model.trust_remote_code)
    files = prepare_training_files(recipe, run, tokenizer)
    base = model if model is not None else load_model(recipe.model)
    max_len = recipe.train.max_length
    val_before = task_losses(base, tokenizer, files.val, max_length=max_len) if files.val else {}
    base_rows = score_tasks(base, tokenizer, files.tasks, recipe, "base") + probe_forgetting(base, tokenizer, recipe, "base")
    for task, loss in val_before.items():
        run.log_metrics(step=0, split="val", task=task, loss=loss)

    # train() wraps the model it is given (PEFT layers are injected into it, in place): give it its own
    # copy, and keep a handle on it so each validation can also be scored task by task.
    from tuneforge.train.methods import PROMPT_LEARNING, load_base_model

    train_model = _copy(model) if model is not None else load_base_model(recipe)
    # Prompt/prefix tuning keep their virtual tokens in the PEFT wrapper, not in the wrapped model.
    per_task = files.val is not None and recipe.train.method not in PROMPT_LEARNING

    def on_eval(step: int, val_loss: float) -> bool:
        if per_task:
            for task, loss in task_losses(train_model, tokenizer, files.val, max_length=max_len).items():
                run.log_metrics(step=step, split="val", task=task, loss=loss)
        return False

    result = train(recipe, run, files.train, files.val, model=train_model, tokenizer=tokenizer, on_eval=on_eval)
    tuned = load_trained(recipe, result.output_dir, result.method)
    val_after = task_losses(tuned, tokenizer, files.val, max_length=max_len) if files.val else {}
    for task, loss in val_after.items():  # the exported (best) weights, which may predate the last step
        run.log_metrics(step=result.steps, split="val_final", task=task, loss=loss)
    tuned_rows = score_tasks(tuned, tokenizer, files.tasks, recipe, "multitask")
    tuned_rows += probe_forgetting(tuned, tokenizer, recipe, "multitask")
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


def probe_forgetting(model: Any, tokenizer: Any, recipe: Recipe, system: str) -> list[ResultRow]:
    """The eval stage's general-ability probes (ARC-Easy, BoolQ, MMLU...), when ``eval.forgetting`` is on."""
    if not recipe.eval.forgetting:
        return []
    from tuneforge.eval.forgetting import run_forgetting

    return run_forgetting(model, tokenizer, recipe.eval, system, seed=recipe.run.seed)


def forgetting_summary(rows: list[ResultRow], recipe: Recipe, tuned: str) -> list[dict[str, Any]]:
    """Per probe: base and tuned accuracy, the paired difference with its interval, and a drop flag."""
    from dataclasses import asdict

    from tuneforge.eval.forgetting import compare_forgetting

    cfg = recipe.eval
    return [asdict(d) for d in compare_forgetting(rows, "base", tuned, cfg.bootstrap_samples, cfg.confidence,
                                                  seed=recipe.run.seed)]


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
        lines += ["## Forgetting: general-ability probes, base vs tuned", "",
                  "| probe | questions | chance | base | tuned | tuned - base | 95% interval | significant drop |",
                  "|---|---|---|---|---|---|---|---|"]
        for f in summary["forgetting"]:
            ci = "" if f["ci_low"] is None else f"[{f['ci_low']:+.3f}, {f['ci_high']:+.3f}]"
            lines.append(f"| {f['probe']} | {f['n']} | {_num(f.get('chance'), 2)} | {f['base']:.3f} | {f['tuned']:.3f} "
                         f"| {f['delta']:+.3f} | {ci} | {'yes' if f['significant_drop'] else 'no'} |")
        lines += ["", "A probe whose base accuracy is near chance can only show a large drop.", ""]
    return "\n".join(lines)
