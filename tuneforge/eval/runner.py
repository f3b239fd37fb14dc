"""`evaluate_run`: every comparison a run needs, written to ``<run>/eval/``.

Rows, in order: base zero-shot and base k-shot on the test split (``eval.shots``), tuned (when the run
has an adapter or a full model), and the forgetting probes for base and tuned (``eval.forgetting``).
Results are written after each row, so an interrupted evaluation keeps what it finished.
"""

from __future__ import annotations

import contextlib
import logging
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tuneforge.eval.results import ResultRow, write_results

if TYPE_CHECKING:
    from tuneforge.config.eval import EvalConfig
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


def reusable(tuned: Any) -> bool:
    """A trained PEFT model whose adapter can be switched off gives the base model's outputs exactly, so
    the base rows need no second copy of the base weights. Prompt learning changes the inputs instead of
    the layers: it (and full fine-tuning) loads the base again."""
    peft_config = getattr(tuned, "peft_config", None)
    if not peft_config or not hasattr(tuned, "disable_adapter"):
        return False
    return not any(getattr(c, "is_prompt_learning", False) for c in peft_config.values())


def evaluate_run(
    recipe: Recipe,
    run: Run | str | Path,
    test_file: str | Path,
    train_file: str | Path | None = None,
    adapter_dir: str | Path | None = None,
    *,
    tokenizer: Any = None,
    tuned_model: Any = None,
) -> list[ResultRow]:
    """Evaluate base (zero/k-shot), tuned and forgetting into ``<run>/eval/results.json``.

    ``tokenizer`` and ``tuned_model`` (the model training just returned) may be passed in, so that
    train-then-evaluate reuses what training already holds in memory instead of loading it again.
    """
    from tuneforge.eval.evaluate import evaluate_split, pop_predictions, write_predictions
    from tuneforge.models import attach_adapter, load_model, load_tokenizer
    from tuneforge.provenance import seed_everything
    from tuneforge.runs import ADAPTER, Run, TunedWeights, tuned_weights_in

    run_obj = run if isinstance(run, Run) else None
    run_path = Path(run.path if isinstance(run, Run) else run)
    cfg, seed = recipe.eval, recipe.run.seed
    if cfg.target_precision:
        cfg = sized_for_precision(cfg, test_file)
    seed_everything(seed)
    # An adapter named in the recipe (tuneforge eval --adapter) is "the tuned model" of this run.
    named = adapter_dir or recipe.model.adapter
    tuned = TunedWeights(ADAPTER, Path(named)) if named else tuned_weights_in(run_path)
    tokenizer = tokenizer or load_tokenizer(recipe.model.name, recipe.model.trust_remote_code)
    reuse = tuned is not None and tuned_model is not None and reusable(tuned_model)
    if not reuse:  # this function's reference must not keep a full tuned model beside the base loaded next
        tuned_model = None
    model = tuned_model.eval() if reuse else load_model(recipe.model, adapter="")

    def as_base():  # the base model's outputs: the trained adapter switched off, or the base itself
        return model.disable_adapter() if reuse else contextlib.nullcontext()

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
        with as_base():
            record(evaluate_split(model, tokenizer, test_file, system=shot_system(k), train_file=train_file,
                                  shots=k, cfg=cfg, seed=seed))
    suite = forgetting_suite(tokenizer, cfg, seed, test_file) if tuned is not None and cfg.forgetting else None
    if suite is not None:
        with as_base():  # the base runs first: it is the drift reference the tuned model is measured against
            for row in suite.run(model, "base", base=True):
                record(row)
    if tuned is not None and not reuse:
        if tuned.adapter is not None:
            model = attach_adapter(model, str(tuned.adapter))
            model.eval()
        else:
            del model
            model = load_model(recipe.model.model_copy(update={"name": str(tuned.path), "adapter": None}))
    if tuned is not None:
        record(evaluate_split(model, tokenizer, test_file, system="tuned", cfg=cfg, seed=seed))
        if suite is not None:
            for row in suite.run(model, "tuned"):
                record(row)
    return rows


def forgetting_suite(tokenizer: Any, cfg: EvalConfig, seed: int, test_file: str | Path):
    """The probes for this run, looking for the test split's answers (label words) in general answers."""
    from tuneforge.eval.behaviour import task_answers_of
    from tuneforge.eval.evaluate import load_examples
    from tuneforge.eval.forgetting import ForgettingSuite

    return ForgettingSuite(tokenizer, cfg, seed, task_answers=task_answers_of(load_examples(test_file)))


def sized_for_precision(cfg: EvalConfig, test_file: str | Path) -> EvalConfig:
    """``cfg`` with the test sample and every probe sized for ``cfg.target_precision`` (interval half-width
    of a proportion at its worst case); says what the test split can give when it is smaller."""
    from tuneforge.eval.power import examples_for_precision, precision_at

    target = cfg.target_precision or 0.0
    n = examples_for_precision(target, cfg.confidence)
    available = sum(1 for line in Path(test_file).read_text(encoding="utf-8").splitlines() if line.strip())
    print(f"sizing for a {cfg.confidence:.0%} interval of +/-{target:g}: {n} examples per test sample and probe")
    if available < n:
        print(f"  the test split has {available} examples: its intervals will be about "
              f"+/-{precision_at(available, cfg.confidence):.3f}; add {n - available} test examples to reach +/-{target:g}")
    return cfg.model_copy(update={"max_examples": n, "forgetting_examples": n, "general_examples": n})
