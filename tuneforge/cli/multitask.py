"""`tuneforge multitask`: several tasks trained together from one mixed dataset, scored one by one."""

from __future__ import annotations

import argparse

from tuneforge.cli.common import (
    add_recipe_args,
    flag,
    recipe_with_section,
    run_strategy,
    strategy_train_flags,
)

EPILOG = """\
examples:
  tuneforge multitask examples/multitask.yaml
  tuneforge multitask examples/multitask.yaml --strategy fixed      # needs weight: on every task
  tuneforge multitask examples/multitask.yaml --temperature 5 --set mixture.cap=500

Writes runs/<name>/: data/<task>/ (each task's splits), data/mixture/train.jsonl (the mixture),
adapter/ (or model/), eval/results.json (systems base and multitask, one row per task),
strategy.json and report.md (each task's share, validation loss before/after, test scores).
"""


def register(sub: argparse._SubParsersAction) -> None:
    m = sub.add_parser(
        "multitask", help="Train several tasks together from one mixed dataset; score each task.",
        description="Multi-task fine-tuning: prepare every task of the recipe's mixture section, draw one "
        "shuffled training set from them (proportional, fixed weights or temperature sampling with caps), "
        "train once, and report validation loss and test scores per task.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_recipe_args(m, positional=True)
    flag(m, "--strategy", "mixture.strategy", choices=["proportional", "fixed", "temperature"],
         help="How tasks are weighted in the mixture.")
    flag(m, "--temperature", "mixture.temperature", type=float, help="T for temperature sampling (>= 1).")
    flag(m, "--cap", "mixture.cap", type=int, help="Count at most N examples of a task when computing rates.")
    flag(m, "--total", "mixture.total", type=int, help="Training examples in the mixture.")
    strategy_train_flags(m)
    m.set_defaults(func=cmd_multitask)


def cmd_multitask(args: argparse.Namespace) -> int:
    from tuneforge.strategies.multitask import multitask_markdown, run_multitask

    recipe = recipe_with_section(args, "mixture", "examples/multitask.yaml")
    return run_strategy(args, recipe, "multitask", run_multitask, multitask_markdown)
