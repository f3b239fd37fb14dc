"""`tuneforge eval`, `tuneforge compare`, `tuneforge report`: measure, compare and explain runs."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from tuneforge.cli.common import add_recipe_args, flag, overrides_from_args
from tuneforge.errors import UserError

if TYPE_CHECKING:
    from tuneforge.config.recipe import Recipe
    from tuneforge.runs import Run


def _shots(text: str) -> list[int]:
    try:
        values = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--shots takes comma-separated integers like 0,1,3 (got {text!r})") from None
    if any(v < 0 for v in values):
        raise argparse.ArgumentTypeError("--shots must not be negative")
    return values


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "eval",
        help="Score base zero/k-shot, the tuned model and forgetting probes on the test split.",
        description="Evaluate on the held-out test split: base zero-shot and k-shot prompts (examples drawn "
        "from the train split, never from test), the tuned model when the run has one, and forgetting probes "
        "for base and tuned: drift (KL on general text and chat), loss on general instructions, behaviour on "
        "general prompts, and multiple-choice benchmarks (ARC-Easy, BoolQ, MMLU subjects). "
        "Results go to <run>/eval/results.json, answers to <run>/eval/predictions-<system>.jsonl, and "
        "an HTML report to <run>/report.html.",
        epilog="examples:\n"
        "  tuneforge eval --test data/test.jsonl --train data/train.jsonl --shots 0,3   # baselines only\n"
        "  tuneforge eval --run runs/lora-sentiment            # a training run: its data/ and adapter/\n"
        "  tuneforge eval --run runs/lora --max-examples 100 --no-forgetting\n"
        "  tuneforge eval --run runs/lora --precision 0.1   # sample sizes for +/-0.1 intervals",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_recipe_args(p)
    p.add_argument("--run", help="Existing run folder to evaluate (e.g. a training run); default: a new eval run.")
    p.add_argument("--test", help="Test split JSONL (default: <run>/data/test.jsonl or <data.path>/test.jsonl).")
    p.add_argument("--train", help="Train split JSONL for k-shot examples (default: next to the test split).")
    flag(p, "--shots", "eval.shots", type=_shots, help="In-context baselines, e.g. 0,1,3.")
    flag(p, "--max-examples", "eval.max_examples", type=int, help="Evaluate at most N test examples.")
    flag(p, "--max-new-tokens", "eval.max_new_tokens", type=int, help="Tokens to generate per answer.")
    flag(p, "--batch-size", "eval.batch_size", type=int, help="Prompts per generation batch.")
    flag(p, "--temperature", "eval.temperature", type=float, help="0 = greedy; >0 samples (seeded).")
    flag(p, "--no-forgetting", "eval.forgetting", action="store_const", const=False,
         help="Skip the general-ability probes.")
    flag(p, "--forgetting-examples", "eval.forgetting_examples", type=int, help="Questions per probe.")
    flag(p, "--trust-remote-code", "model.trust_remote_code", action="store_const", const=True,
         help="Let the model folder run its own Python code (never taken from a --run folder's recipe).")
    flag(p, "--precision", "eval.target_precision", type=float,
         help="Size the test sample and every probe so an interval is at most +/- this (0.1 -> 97 examples).")
    p.add_argument("--no-report", action="store_true", help="Do not write report.html.")
    p.set_defaults(func=cmd_eval)

    c = sub.add_parser(
        "compare",
        help="One table of every metric across runs, plus answers side by side.",
        description="Compare runs: every system (base zero-shot, base k-shot, tuned, RAG) and metric with "
        "intervals, forgetting deltas, and the same test prompts answered by each system.",
        epilog="example:\n  tuneforge compare runs/lora runs/full --examples 5",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    c.add_argument("runs", nargs="+", help="Run folders with eval/results.json.")
    c.add_argument("--examples", type=int, default=3, help="Test prompts shown side by side (default 3; 0: none).")
    c.add_argument("--ids", help="Comma-separated example ids to show instead of the first N.")
    c.set_defaults(func=cmd_compare)

    r = sub.add_parser(
        "report",
        help="Write the run's self-contained HTML report.",
        description="Write <run>/report.html: verdict ('Was fine-tuning worth it?'), metrics with intervals, "
        "forgetting deltas, loss curves, token lengths and example answers. Opens offline.",
        epilog="example:\n  tuneforge report runs/lora-sentiment && xdg-open runs/lora-sentiment/report.html",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    r.add_argument("run", help="Run folder.")
    r.set_defaults(func=cmd_report)


def _split_files(args: argparse.Namespace, run: Run | None, recipe: Recipe) -> tuple[Path, Path | None]:
    """--test/--train when given; otherwise the splits by the one rule of ``Run.splits``."""
    from tuneforge.runs import Splits, is_prepared, splits_in

    found = run.splits() if run is not None else (
        splits_in(recipe.data.path) if recipe.data and is_prepared(recipe.data.path) else Splits(None, None, None))
    test = Path(args.test) if args.test else found.test
    if test is None:
        raise UserError("no test split: give --test FILE (or --run with data/test.jsonl, or data.path = a prepared folder)")
    if not test.is_file():
        raise UserError(f"{test}: test split not found")
    train = Path(args.train) if args.train else (
        found.train if not args.test else splits_in(test.parent).train or found.train)
    if train is not None and not train.is_file():
        raise UserError(f"{train}: train split not found")
    return test, train


def cmd_eval(args: argparse.Namespace) -> int:
    from tuneforge.config.loader import load_recipe
    from tuneforge.eval.report import write_report
    from tuneforge.eval.runner import evaluate_run
    from tuneforge.runs import RECIPE, Run, create_run, load_run_recipe

    run_path = Path(args.run) if args.run else None
    if run_path is not None and not (run_path / RECIPE).is_file():
        raise UserError(f"{run_path}: not a run folder (no recipe.yaml)")
    if args.recipe or run_path is None:
        recipe = load_recipe(args.recipe, overrides_from_args(args))
    else:  # the run folder's own recipe: it cannot turn trust_remote_code on by itself
        recipe = load_run_recipe(run_path, overrides_from_args(args))
    existing = Run(path=run_path, recipe=recipe) if run_path is not None else None
    test, train = _split_files(args, existing, recipe)
    if existing is None:
        run = create_run(recipe, "eval", inputs=[p for p in (test, train) if p])
    else:
        run = existing.hold()  # results go into the run: one writer at a time
    with run:
        print(f"evaluating into {run.path} (test: {test}, k-shot examples from: {train or 'none'})")
        evaluate_run(recipe, run, test, train)
        if not args.no_report:
            print(f"report: {write_report(run.path)}")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from tuneforge.eval.compare import compare_runs, side_by_side

    print(compare_runs(args.runs))
    if args.examples > 0 or args.ids:
        ids = [i.strip() for i in args.ids.split(",")] if args.ids else None
        print()
        print(side_by_side(args.runs, n=args.examples, ids=ids))
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from tuneforge.eval.report import write_report

    print(write_report(args.run))
    return 0
