"""Shared CLI plumbing: every command reads a recipe, and every flag is an override of a recipe field.

A flag declared with ``dest="section.field"`` (see :func:`flag`) overrides that field; ``--set
section.field=value`` overrides any field. Overrides are applied before validation, so a bad flag value
is reported together with the recipe's own problems.
"""

from __future__ import annotations

import argparse
from typing import Any

from tuneforge.config.loader import load_recipe, parse_override
from tuneforge.config.recipe import Recipe
from tuneforge.errors import UserError


def add_recipe_args(parser: argparse.ArgumentParser, positional: bool = False) -> None:
    """``RECIPE`` (or ``--recipe``) plus ``--set`` and the flags every command shares."""
    if positional:
        parser.add_argument("recipe", nargs="?", help="YAML recipe (optional: defaults are used without one).")
    else:
        parser.add_argument("--recipe", "-r", help="YAML recipe to start from.")
    parser.add_argument(
        "--set", "-s", action="append", default=[], metavar="KEY=VALUE",
        help="Override any recipe field, e.g. --set train.learning_rate=1e-4 (repeatable).",
    )
    flag(parser, "--model", "model.name", help="Base model: bundled name, local folder or .gguf file.")
    flag(parser, "--adapter", "model.adapter", help="PEFT adapter folder to apply.")
    flag(parser, "--device", "model.device", help="auto, cpu, cuda, cuda:N or mps.")
    flag(parser, "--seed", "run.seed", type=int, help="Random seed.")
    flag(parser, "--name", "run.name", help="Run folder name.")
    flag(parser, "--output-dir", "run.output_dir", help="Parent folder of run folders (default runs).")


def flag(parser: argparse.ArgumentParser, name: str, field: str, **kwargs: Any) -> None:
    """A flag that overrides recipe field ``field`` (shown in --help)."""
    help_text = kwargs.pop("help", "")
    kwargs.setdefault("default", None)
    parser.add_argument(name, dest=field, help=f"{help_text} [{field}]", **kwargs)


def overrides_from_args(args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for text in getattr(args, "set", []) or []:
        key, value = parse_override(text)
        out[key] = value
    for key, value in vars(args).items():
        if "." in key and value is not None:
            out[key] = value
    return out


def recipe_from_args(args: argparse.Namespace) -> Recipe:
    return load_recipe(getattr(args, "recipe", None), overrides_from_args(args))


def strategy_train_flags(p: argparse.ArgumentParser) -> None:
    """The train flags every strategy command (multitask, stages) shares."""
    flag(p, "--method", "train.method", help="Fine-tuning method (lora, full, ...).")
    flag(p, "--lr", "train.learning_rate", type=float, help="Peak learning rate.")
    flag(p, "--epochs", "train.epochs", type=float, help="Passes over the training data.")
    flag(p, "--max-steps", "train.max_steps", type=int, help="Stop after N optimizer steps.")
    flag(p, "--eval-examples", "eval.max_examples", type=int, help="Score at most N test examples per task.")


def recipe_with_section(args: argparse.Namespace, section: str, example: str):
    """The resolved recipe, which must have ``section`` (mixture, stages, ...)."""
    recipe = recipe_from_args(args)
    if getattr(recipe, section) is None:
        raise UserError(f"{args.recipe or 'the recipe'}: no {section} section; see {example}")
    return recipe


def run_strategy(args: argparse.Namespace, recipe: Recipe, command: str, strategy: Any, render: Any) -> int:
    """Seed, create the run folder, run the strategy, print its report (``render(summary)``)."""
    from tuneforge.provenance import seed_everything
    from tuneforge.runs import create_run

    seed_everything(recipe.run.seed)
    with create_run(recipe, command, inputs=[args.recipe] if args.recipe else []) as run:
        summary = strategy(recipe, run)
    print(render(summary))
    print(f"run folder: {run.path}")
    return 0
