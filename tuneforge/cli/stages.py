"""`tuneforge stages`: sequential fine-tuning, each stage from the last, with gained vs forgotten."""

from __future__ import annotations

import argparse

from tuneforge.cli.common import add_recipe_args, recipe_with_section, run_strategy, strategy_train_flags

EPILOG = """\
examples:
  tuneforge stages examples/sequential.yaml
  tuneforge stages examples/sequential.yaml --set train.max_steps=50     # every stage, short

Writes runs/<name>/: stages/<k>-<name>/ (each stage's data and training run), model/ (the final
weights, every stage merged), eval/results.json (base and "after <k>-<name>" on each task) and
report.md (score matrix; what each stage gained and what it made the model forget).
"""



def register(sub: argparse._SubParsersAction) -> None:
    s = sub.add_parser(
        "stages", help="Sequential fine-tuning: each stage starts from the last; reports forgetting.",
        description="Train the recipe's stages in order (e.g. general -> medical -> paediatric cardiology). "
        "Each stage has its own data and train overrides and starts from the previous stage's merged "
        "weights or keeps training its adapter; after each stage the model is scored on every earlier "
        "stage's task, so the report shows what was gained and what was forgotten.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_recipe_args(s, positional=True)
    strategy_train_flags(s)
    s.set_defaults(func=cmd_stages)


def cmd_stages(args: argparse.Namespace) -> int:
    from tuneforge.strategies.stages import plan_stages, run_stages
    from tuneforge.strategies.stages_report import stages_markdown

    recipe = recipe_with_section(args, "stages", "examples/sequential.yaml")
    plan_stages(recipe)  # every stage's recipe is checked before the run folder exists
    return run_strategy(args, recipe, "stages", run_stages, stages_markdown)
