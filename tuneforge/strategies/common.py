"""What every strategy shares: preparing tasks, scoring them, probing forgetting, loading tuned weights.

A strategy (sft, multitask, stages, tune) composes the training engine (:mod:`tuneforge.train`) with the
evaluation stage (:mod:`tuneforge.eval`); these helpers are the pieces more than one of them uses.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tuneforge import atomic
from tuneforge.errors import UserError
from tuneforge.runs import DATA
from tuneforge.strategies.mixture import concat_tagged, mix_files, read_jsonl, shares_table, tag, write_jsonl

if TYPE_CHECKING:
    from tuneforge.config.data import DataConfig
    from tuneforge.config.recipe import Recipe
    from tuneforge.eval.results import ResultRow
    from tuneforge.runs import Run, TunedWeights

log = logging.getLogger(__name__)


def write_json(path: Path, payload: Any) -> Path:
    """A strategy's summary file, written atomically."""
    return atomic.write_json(path, payload, default=str)


def load_tuned(recipe: Recipe, weights: TunedWeights):
    """The model a training run produced: base + adapter (PEFT) or the saved full model."""
    from tuneforge.models import load_model

    if weights.adapter is not None:
        return load_model(recipe.model.model_copy(update={"adapter": str(weights.adapter)}))
    return load_model(recipe.model.model_copy(update={"name": str(weights.path), "adapter": None}))


def weights_gb(*models: Any) -> float:
    """GB (2**30 bytes, as train.memory_limit_gb) of the models' parameters and buffers."""
    return sum(t.numel() * t.element_size() for m in models if m is not None
               for t in (*m.parameters(), *m.buffers())) / 2**30


def leave_room(recipe: Recipe, *held: Any) -> Recipe:
    """``recipe`` whose explicit ``train.memory_limit_gb`` leaves room for the models ``held`` in memory beside
    the one being trained: the run's memory planner counts its own model only. (Without an explicit limit
    the planner's share of free memory already excludes them.)"""
    limit = recipe.train.memory_limit_gb
    if not limit:
        return recipe
    gb = weights_gb(*held)
    print(f"memory: {gb:.2f} GB of weights held beside this training: it plans within "
          f"{limit - gb:.2f} of train.memory_limit_gb's {limit:g} GB")
    train_cfg = recipe.train.model_copy(update={"memory_limit_gb": max(limit - gb, 0.01)})
    return recipe.model_copy(update={"train": train_cfg})


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
    data_dir = run.path / DATA
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


def forgetting_suite(recipe: Recipe, tokenizer: Any, tasks: dict[str, TaskFiles],
                     general: list[str] | None = None, multiple_choice: list[str] | None = None):
    """The eval stage's forgetting probes for these tasks (None when ``eval.forgetting`` is off): run it on
    the base model first (the drift reference), then on each trained model. The behaviour probe looks for
    the tasks' answers (label words) in answers to general prompts."""
    if not recipe.eval.forgetting:
        return None
    from tuneforge.eval.behaviour import task_answers_of
    from tuneforge.eval.forgetting import ForgettingSuite

    examples = [r for t in tasks.values() if t.test.is_file() for r in read_jsonl(t.test)]
    return ForgettingSuite(tokenizer, recipe.eval, recipe.run.seed, task_answers=task_answers_of(examples),
                           general=general, multiple_choice=multiple_choice)


def probe_forgetting(model: Any, suite: Any, system: str) -> list[ResultRow]:
    """The suite's rows for ``model`` (nothing when forgetting is off)."""
    return suite.run(model, system) if suite is not None else []


def forgetting_summary(rows: list[ResultRow], recipe: Recipe, tuned: str) -> list[dict[str, Any]]:
    """Per probe: base and tuned, the paired difference with its interval, a flag, the power figures and a
    plain-words reading."""
    from tuneforge.eval.forgetting import compare_forgetting
    from tuneforge.eval.forgetting_reading import reading

    cfg = recipe.eval
    deltas = compare_forgetting(rows, "base", tuned, cfg.bootstrap_samples, cfg.confidence, cfg.forgetting_drop,
                                seed=recipe.run.seed, drift_threshold=cfg.drift_threshold, power=cfg.power,
                                behaviour_margin=cfg.behaviour_margin)
    return [{**asdict(d), "label": d.label, "reading": reading(d)} for d in deltas]
