"""`tuneforge quickstart`: the whole lifecycle on the bundled model in about 10 minutes on a CPU."""

from __future__ import annotations

import argparse

from tuneforge.cli.common import add_recipe_args, flag


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "quickstart",
        help="Run the whole lifecycle on the bundled model and real review data (~10 min on CPU).",
        description="Prepare Rotten Tomatoes reviews as a sentiment task, score the bundled SmolLM2 zero- and "
        "few-shot, fine-tune it with LoRA, score it again with forgetting probes, show base vs tuned "
        "answers, and write an HTML report. Everything runs offline; the recipe is "
        "tuneforge/recipes/quickstart.yaml and every field can be overridden.",
        epilog="examples:\n  tuneforge quickstart\n  tuneforge quickstart --examples 400 --set eval.forgetting=false\n"
        "  tuneforge quickstart --recipe my-quickstart.yaml",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_recipe_args(p)
    flag(p, "--examples", "data.max_examples", type=int, help="How many reviews to use in all.")
    flag(p, "--epochs", "train.epochs", type=float, help="Training epochs.")
    flag(p, "--lr", "train.learning_rate", type=float, help="Learning rate.")
    p.set_defaults(func=cmd_quickstart)


def cmd_quickstart(args: argparse.Namespace) -> int:
    from tuneforge.cli.common import overrides_from_args
    from tuneforge.config.loader import load_recipe
    from tuneforge.strategies.quickstart import quickstart_recipe_path, run_quickstart

    recipe = load_recipe(args.recipe or quickstart_recipe_path(), overrides_from_args(args))
    run_quickstart(recipe)
    return 0
