"""The quickstart: the whole lifecycle on the bundled model, end to end, in one call.

prepare data -> base zero/few-shot baselines -> LoRA fine-tune -> tuned test score and forgetting
probes -> side-by-side answers -> HTML report. Each stage records what it did; the summary prints only
what actually ran, with its numbers (a stage that did not run is listed as such, never as done).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from tuneforge.config.recipe import Recipe
from tuneforge.eval.runner import shot_system
from tuneforge.provenance import seed_everything
from tuneforge.runs import SPLITS, Run, Splits, create_run


def quickstart_recipe_path() -> Path:
    return Path(str(resources.files("tuneforge") / "recipes" / "quickstart.yaml"))


@dataclass
class Stage:
    name: str
    status: str = "not run"  # "ran", "failed" or "not run"
    summary: str = ""
    seconds: float = 0.0


@dataclass
class QuickstartResult:
    run: Run
    stages: list[Stage] = field(default_factory=list)
    side_by_side: list[dict[str, str]] = field(default_factory=list)
    report: Path | None = None


def _stage(result: QuickstartResult, name: str, fn: Callable[[], tuple[Any, str]]) -> Any:
    stage = Stage(name)
    result.stages.append(stage)
    print(f"\n== {name}")
    start = time.perf_counter()
    try:
        value, stage.summary = fn()
    except BaseException:
        stage.status = "failed"
        stage.seconds = time.perf_counter() - start
        raise
    stage.status = "ran"
    stage.seconds = time.perf_counter() - start
    print(f"   {stage.summary}  ({stage.seconds:.0f} s)")
    return value


def _metric(rows: list, system: str, task_prefix: str = "") -> tuple[str, Any] | None:
    for row in rows:
        if row.system == system and row.task.startswith(task_prefix) and row.metrics:
            name = next(iter(row.metrics))
            return name, row.metrics[name]
    return None


def _fmt(metric: tuple[str, Any] | None) -> str:
    if metric is None:
        return "n/a"
    name, m = metric
    ci = f" [{m.ci_low:.2f}, {m.ci_high:.2f}]" if m.ci_low is not None and m.ci_high is not None else ""
    return f"{name} {m.value:.3f}{ci}"


def side_by_side(run_path: Path, n: int = 3) -> list[dict[str, str]]:
    """Base zero-shot vs tuned answers to the first test prompts, from the saved predictions."""
    from tuneforge.eval.evaluate import read_predictions
    from tuneforge.eval.runner import predictions_path

    base_file, tuned_file = predictions_path(run_path, "base zero-shot"), predictions_path(run_path, "tuned")
    if not (base_file.is_file() and tuned_file.is_file()):
        return []
    base, tuned = read_predictions(base_file), read_predictions(tuned_file)
    rows = []
    for b, t in list(zip(base, tuned, strict=False))[:n]:
        rows.append({
            "prompt": str(b.get("prompt", "")),
            "reference": str(b.get("reference", "")),
            "base": str(b.get("prediction", "")),
            "tuned": str(t.get("prediction", "")),
        })
    return rows


def _data_summary(recipe: Recipe, splits: Splits) -> str:
    counts = []
    for name in SPLITS:
        path = getattr(splits, name)
        counts.append(f"{name} {sum(1 for line in path.open(encoding='utf-8') if line.strip()) if path else 0}")
    quality = splits.folder / "quality.json" if splits.folder else None
    problems = json.loads(quality.read_text()).get("problem_count", 0) if quality and quality.is_file() else 0
    return (f"{recipe.data.path} via template {recipe.data.template}: {', '.join(counts)}; "
            f"{problems} data problems reported")


def run_quickstart(recipe: Recipe) -> QuickstartResult:
    """Run every stage of the lifecycle on ``recipe`` (see tuneforge/recipes/quickstart.yaml): the
    supervised fine-tuning strategy's steps, one at a time, each timed and summarised."""
    if recipe.data is None:
        from tuneforge.errors import UserError

        raise UserError("the quickstart recipe needs a data: section")
    seed_everything(recipe.run.seed)
    with create_run(recipe, "quickstart") as run:  # the run folder is released when the stages end
        return _run_stages(recipe, run)


def _run_stages(recipe: Recipe, run: Run) -> QuickstartResult:
    """The stages, timed and summarised one by one, inside the held run folder."""
    from tuneforge.eval.report import write_report
    from tuneforge.models import load_tokenizer
    from tuneforge.strategies.sft import evaluate_trained, hand_over, prepare_splits
    from tuneforge.train import train

    result = QuickstartResult(run=run)
    print(f"tuneforge quickstart: run folder {run.path}")
    tokenizer = load_tokenizer(recipe.model.name, recipe.model.trust_remote_code)

    def data_stage():
        splits = prepare_splits(recipe, run, tokenizer)
        run.add_inputs([p for p in (splits.train, splits.val, splits.test) if p])
        return splits, _data_summary(recipe, splits)

    splits = _stage(result, "1. prepare data", data_stage)

    def train_stage():
        res = train(recipe, run, splits.train, splits.val, tokenizer=tokenizer)
        return res, (
            f"{res.method}: {res.trainable_params:,} of {res.total_params:,} weights trained, {res.steps} steps, "
            f"val loss {res.initial_val_loss:.3f} -> {res.best_val_loss:.3f}, {res.tokens_per_s:.0f} tokens/s"
        )

    trained = _stage(result, "2. fine-tune (LoRA)", train_stage)

    def eval_stage():
        rows, _ = evaluate_trained(recipe, run, splits, tokenizer=tokenizer, tuned_model=hand_over(trained),
                                   report=False)
        parts = [f"{shot_system(k)}: {_fmt(_metric(rows, shot_system(k)))}" for k in recipe.eval.shots]
        parts.append(f"tuned: {_fmt(_metric(rows, 'tuned'))}")
        return rows, "; ".join(parts)

    rows = _stage(result, "3. evaluate: baselines, tuned, forgetting", eval_stage)
    result.side_by_side = side_by_side(run.path)

    def report_stage():
        path = write_report(run.path)
        return path, f"report: {path}"

    result.report = _stage(result, "4. report", report_stage)
    print_summary(result, rows)
    return result


def print_summary(result: QuickstartResult, rows: list) -> None:
    print("\n" + "=" * 72)
    print("quickstart summary")
    for stage in result.stages:
        print(f"  [{stage.status}] {stage.name}: {stage.summary}")
    from tuneforge.eval.forgetting import compare_forgetting
    from tuneforge.eval.forgetting_reading import reading

    cfg = result.run.recipe.eval
    deltas = compare_forgetting(rows, samples=cfg.bootstrap_samples, confidence=cfg.confidence,
                                margin=cfg.forgetting_drop, seed=result.run.recipe.run.seed,
                                drift_threshold=cfg.drift_threshold, power=cfg.power,
                                behaviour_margin=cfg.behaviour_margin)
    if deltas:
        print("  forgetting probes (base -> tuned):")
        for d in deltas:
            print(f"    {'FLAGGED ' if d.flagged else ''}{reading(d)}")
    if result.side_by_side:
        print("  base vs tuned on test prompts:")
        for ex in result.side_by_side:
            head = ex["prompt"].splitlines()[0] if ex["prompt"] else ""
            print(f"    {head[:110]!r}")
            print(f"      reference {ex['reference']!r} | base {ex['base']!r} | tuned {ex['tuned']!r}")
    if result.report:
        print(f"  open the report: {result.report}")
