"""`evaluate_run`: every comparison a run needs, written to ``<run>/eval/``.

Rows, in order: base zero-shot and base k-shot on the test split (``eval.shots``), tuned (when the run
has an adapter or a full model), and the forgetting probes for base and tuned (``eval.forgetting``).
Results are written after each row, so an interrupted evaluation keeps what it finished.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import TYPE_CHECKING

from tuneforge.eval.results import ResultRow, write_results

if TYPE_CHECKING:
    from tuneforge.config.recipe import Recipe
    from tuneforge.runs import Run

log = logging.getLogger(__name__)


def system_slug(system: str) -> str:
    """File-name form of a system name: ``base 3-shot`` -> ``base-3-shot``."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", system).strip("-")


def predictions_path(run_path: str | Path, system: str) -> Path:
    return Path(run_path) / "eval" / f"predictions-{system_slug(system)}.jsonl"


def shot_system(k: int) -> str:
    return "base zero-shot" if k == 0 else f"base {k}-shot"


def find_tuned(run_path: Path, adapter_dir: str | Path | None) -> tuple[str, Path] | None:
    """('adapter', folder) or ('model', folder) for the run's tuned weights, if any."""
    if adapter_dir:
        return "adapter", Path(adapter_dir)
    if (run_path / "adapter" / "adapter_config.json").is_file():
        return "adapter", run_path / "adapter"
    if (run_path / "model" / "config.json").is_file():
        return "model", run_path / "model"
    return None


def evaluate_run(
    recipe: Recipe,
    run: Run | str | Path,
    test_file: str | Path,
    train_file: str | Path | None = None,
    adapter_dir: str | Path | None = None,
) -> list[ResultRow]:
    """Evaluate base (zero/k-shot), tuned and forgetting into ``<run>/eval/results.json``."""
    from tuneforge.eval.evaluate import evaluate_split, pop_predictions, write_predictions
    from tuneforge.eval.forgetting import run_forgetting
    from tuneforge.models import attach_adapter, load_model, load_tokenizer
    from tuneforge.runs import Run, seed_everything

    run_obj = run if isinstance(run, Run) else None
    run_path = Path(run.path if isinstance(run, Run) else run)
    cfg, seed = recipe.eval, recipe.run.seed
    seed_everything(seed)
    # An adapter named in the recipe (tuneforge eval --adapter) is "the tuned model" of this run.
    tuned = find_tuned(run_path, adapter_dir or recipe.model.adapter)
    tokenizer = load_tokenizer(recipe.model.name, recipe.model.trust_remote_code)
    model = load_model(recipe.model, adapter="")
    rows: list[ResultRow] = []

    def record(row: ResultRow) -> None:
        preds = pop_predictions(row)
        if preds:
            write_predictions(predictions_path(run_path, row.system), preds)
        rows.append(row)
        write_results(run_path, [row])
        if run_obj is not None:
            run_obj.log_metrics(split=f"eval/{row.task}", system=row.system,
                                **{k: v.value for k, v in row.metrics.items()})
        shown = ", ".join(f"{k} {v.value:.3f}" for k, v in row.metrics.items())
        print(f"  {row.system:<16} {row.task:<24} {shown}")

    for k in cfg.shots:
        if k > 0 and train_file is None:
            print(f"  skipping base {k}-shot: no train split to draw examples from (give --train)")
            continue
        record(evaluate_split(model, tokenizer, test_file, system=shot_system(k), train_file=train_file,
                              shots=k, cfg=cfg, seed=seed))
    if tuned is not None and cfg.forgetting:
        for row in run_forgetting(model, tokenizer, cfg, "base", seed=seed):
            record(row)
    if tuned is not None:
        kind, folder = tuned
        if kind == "adapter":
            model = attach_adapter(model, str(folder))
            model.eval()
        else:
            from tuneforge.config.recipe import ModelConfig

            del model
            model = load_model(ModelConfig(**{**recipe.model.model_dump(), "name": str(folder), "adapter": None}))
        record(evaluate_split(model, tokenizer, test_file, system="tuned", cfg=cfg, seed=seed))
        if cfg.forgetting:
            for row in run_forgetting(model, tokenizer, cfg, "tuned", seed=seed):
                record(row)
    return rows
