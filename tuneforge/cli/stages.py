"""`tuneforge multitask` and `tuneforge stages`: multi-task mixtures and sequential fine-tuning."""

from __future__ import annotations

import argparse

from tuneforge.cli.common import add_recipe_args, flag, recipe_from_args
from tuneforge.errors import UserError

MULTITASK_EPILOG = """\
examples:
  tuneforge multitask examples/multitask.yaml
  tuneforge multitask examples/multitask.yaml --strategy fixed      # needs weight: on every task
  tuneforge multitask examples/multitask.yaml --temperature 5 --set mixture.cap=500

Writes runs/<name>/: data/<task>/ (each task's splits), data/mixture/train.jsonl (the mixture),
adapter/ (or model/), eval/results.json (systems base and multitask, one row per task),
strategy.json and report.md (each task's share, validation loss before/after, test scores).
"""

STAGES_EPILOG = """\
examples:
  tuneforge stages examples/sequential.yaml
  tuneforge stages examples/sequential.yaml --set train.max_steps=50     # every stage, short

Writes runs/<name>/: stages/<k>-<name>/ (each stage's data and training run), model/ (the final
weights, every stage merged), eval/results.json (base and "after <k>-<name>" on each task) and
report.md (score matrix; what each stage gained and what it made the model forget).
"""


def register(sub: argparse._SubParsersAction) -> None:
    m = sub.add_parser(
        "multitask", help="Train several tasks together from one mixed dataset; score each task.",
        description="Multi-task fine-tuning: prepare every task of the recipe's mixture section, draw one "
        "shuffled training set from them (proportional, fixed weights or temperature sampling with caps), "
        "train once, and report validation loss and test scores per task.",
        epilog=MULTITASK_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_recipe_args(m, positional=True)
    flag(m, "--strategy", "mixture.strategy", choices=["proportional", "fixed", "temperature"],
         help="How tasks are weighted in the mixture.")
    flag(m, "--temperature", "mixture.temperature", type=float, help="T for temperature sampling (>= 1).")
    flag(m, "--cap", "mixture.cap", type=int, help="Count at most N examples of a task when computing rates.")
    flag(m, "--total", "mixture.total", type=int, help="Training examples in the mixture.")
    _train_flags(m)
    m.set_defaults(func=cmd_multitask)

    s = sub.add_parser(
        "stages", help="Sequential fine-tuning: each stage starts from the last; reports forgetting.",
        description="Train the recipe's stages in order (e.g. general -> medical -> paediatric cardiology). "
        "Each stage has its own data and train overrides and starts from the previous stage's merged "
        "weights or keeps training its adapter; after each stage the model is scored on every earlier "
        "stage's task, so the report shows what was gained and what was forgotten.",
        epilog=STAGES_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_recipe_args(s, positional=True)
    _train_flags(s)
    s.set_defaults(func=cmd_stages)


def _train_flags(p: argparse.ArgumentParser) -> None:
    flag(p, "--method", "train.method", help="Fine-tuning method (lora, full, ...).")
    flag(p, "--lr", "train.learning_rate", type=float, help="Peak learning rate.")
    flag(p, "--epochs", "train.epochs", type=float, help="Passes over the training data.")
    flag(p, "--max-steps", "train.max_steps", type=int, help="Stop after N optimizer steps.")
    flag(p, "--eval-examples", "eval.max_examples", type=int, help="Score at most N test examples per task.")


def _load(args: argparse.Namespace, section: str):
    recipe = recipe_from_args(args)
    if getattr(recipe, section) is None:
        example = "examples/multitask.yaml" if section == "mixture" else "examples/sequential.yaml"
        raise UserError(f"{args.recipe or 'the recipe'}: no {section} section; see {example}")
    return recipe


def cmd_multitask(args: argparse.Namespace) -> int:
    from tuneforge.runs import create_run, seed_everything
    from tuneforge.train.mixture_run import multitask_markdown, run_multitask

    recipe = _load(args, "mixture")
    seed_everything(recipe.run.seed)
    with create_run(recipe, "multitask", inputs=[args.recipe] if args.recipe else []) as run:
        summary = run_multitask(recipe, run)
    print(multitask_markdown(summary))
    print(f"run folder: {run.path}")
    return 0


def cmd_stages(args: argparse.Namespace) -> int:
    from tuneforge.runs import create_run, seed_everything
    from tuneforge.train.stages import plan_stages, run_stages
    from tuneforge.train.stages_report import stages_markdown

    recipe = _load(args, "stages")
    plan_stages(recipe)  # every stage's recipe is checked before the run folder exists
    seed_everything(recipe.run.seed)
    with create_run(recipe, "stages", inputs=[args.recipe] if args.recipe else []) as run:
        summary = run_stages(recipe, run)
    print(stages_markdown(summary))
    print(f"run folder: {run.path}")
    return 0
