"""Supervised fine-tuning as users run it: prepare the data, train, then evaluate the result.

``run_sft(recipe, run)`` is what ``tuneforge train`` and the quickstart both do, once:

1. ``prepare_splits``: the recipe's ``data`` section prepared into ``<run>/data/`` (or a prepared folder
   used as it is);
2. ``tuneforge.train.train`` on the train and validation splits;
3. ``evaluate_trained`` (``eval.after_train``, on by default): base zero/k-shot, the tuned model and
   the forgetting probes on the test split, then ``report.html``. The trained model and the tokenizer
   training used are handed to the evaluation (``hand_over``), so nothing is held twice: a LoRA-style
   model is evaluated as the base with its adapter switched off; a fully trained model is dropped, and
   read back from the run folder only after the base model's rows, never beside the base.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tuneforge.errors import UserError
from tuneforge.runs import DATA, Splits, splits_in

if TYPE_CHECKING:
    from tuneforge.config.recipe import Recipe
    from tuneforge.eval.results import ResultRow
    from tuneforge.runs import Run
    from tuneforge.train.result import TrainResult


@dataclass
class SftResult:
    """What one supervised fine-tuning run produced."""

    run: Run
    splits: Splits
    train: TrainResult
    eval_rows: list[ResultRow] | None = None
    report: Path | None = None


def prepare_splits(recipe: Recipe, run: Run, tokenizer: Any) -> Splits:
    """Train/val/test of the recipe's data: a complete prepared folder as it is, otherwise prepared into
    ``<run>/data/``.

    A prepared folder is used only when complete (see ``tuneforge.data.io.incomplete_reason``) and made
    with the recipe's ``data.redact_pii``; the run's own ``data/`` is prepared again when incomplete (an
    interrupted prepare), never trained on without its validation split.
    """
    if recipe.data is None:
        raise UserError("the recipe has no data section: add data.path (a data file, a bundled dataset or a "
                        "prepared folder with train.jsonl, val.jsonl and test.jsonl), or pass --data")
    from tuneforge.data.io import incomplete_reason
    from tuneforge.data.prepare import check_reusable, is_prepared_folder, prepare_data

    folder = Path(recipe.data.path)
    if is_prepared_folder(folder):
        check_reusable(folder, recipe.data)
        return splits_in(folder)
    prepared_dir = run.path / DATA
    if prepared_dir.is_dir() and incomplete_reason(prepared_dir) is None:
        check_reusable(prepared_dir, recipe.data)  # a resumed run: same data, same redaction
    else:
        prepare_data(recipe.data, prepared_dir, tokenizer=tokenizer, seed=recipe.run.seed)
    return splits_in(prepared_dir)


def hand_over(result: TrainResult) -> Any:
    """The trained model for the evaluation that follows, or None where it must be loaded again later.

    A PEFT model whose adapter can be switched off also serves as the base model: it is handed on (and
    stays in ``result.model``). Any other trained model (full or freeze training, prompt learning) cannot:
    the evaluation needs the base weights too, so this drops ``result.model`` and the evaluation reads
    the tuned weights back from the run folder once the base is gone (one model in memory at a time,
    where handing it on would hold both).
    """
    import gc

    from tuneforge.eval.runner import reusable

    model = result.model
    if model is None or reusable(model):
        return model
    result.model = model = None
    gc.collect()  # its modules may sit in reference cycles: free them now, before the base is loaded
    return None


def evaluate_trained(recipe: Recipe, run: Run, splits: Splits, *, tokenizer: Any = None,
                     tuned_model: Any = None, report: bool = True) -> tuple[list[ResultRow] | None, Path | None]:
    """Baselines, tuned and forgetting on the test split, then (``report``) the HTML report; skipped, with
    a message, when there is no test split."""
    if splits.test is None:
        print(f"no test split in {splits.folder or run.path / DATA}: skipping evaluation "
              f"(run `tuneforge eval --run {run.path}`)")
        return None, None
    from tuneforge.eval.report import write_report
    from tuneforge.eval.runner import evaluate_run

    print("evaluating base (zero/k-shot), tuned and forgetting probes; skip with --no-eval")
    rows = evaluate_run(recipe, run, splits.test, splits.train, tokenizer=tokenizer, tuned_model=tuned_model)
    if not report:
        return rows, None
    path = write_report(run.path)
    print(f"report: {path}")
    return rows, path


def run_sft(recipe: Recipe, run: Run, *, tokenizer: Any = None, model: Any = None,
            splits: Splits | None = None, evaluate: bool | None = None) -> SftResult:
    """Prepare (unless ``splits`` are given), train, and evaluate when ``eval.after_train`` (or
    ``evaluate``) says so. Single process; ``tuneforge train`` under torchrun prepares on the main process
    and calls the pieces itself."""
    from tuneforge.models import load_tokenizer
    from tuneforge.train import train

    tokenizer = tokenizer or load_tokenizer(recipe.model.name, recipe.model.trust_remote_code)
    if splits is None:
        splits = prepare_splits(recipe, run, tokenizer)
        run.add_inputs([p for p in (splits.train, splits.val, splits.test) if p])
    if splits.train is None:
        raise UserError(f"{splits.folder or recipe.data.path if recipe.data else run.path}: no training examples")
    result = train(recipe, run, splits.train, splits.val, model=model, tokenizer=tokenizer)
    out = SftResult(run=run, splits=splits, train=result)
    if recipe.eval.after_train if evaluate is None else evaluate:
        out.eval_rows, out.report = evaluate_trained(recipe, run, splits, tokenizer=tokenizer,
                                                     tuned_model=hand_over(result))
    return out


def sft_summary(recipe: Recipe, run: Run, model: Any = None, tokenizer: Any = None) -> dict[str, Any]:
    """:func:`run_sft` in the shape of every strategy (see :class:`tuneforge.strategies.Strategy`)."""
    from tuneforge.strategies.common import write_json

    out = run_sft(recipe, run, tokenizer=tokenizer, model=model)
    r = out.train
    summary = {"kind": "sft", "train": {"output_dir": str(r.output_dir), "method": r.method, "steps": r.steps,
                                        "initial_val_loss": r.initial_val_loss, "best_val_loss": r.best_val_loss},
               "evaluated": out.eval_rows is not None, "report": str(out.report) if out.report else None}
    write_json(run.path / "strategy.json", summary)
    return summary
