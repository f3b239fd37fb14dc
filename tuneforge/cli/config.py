"""`tuneforge config show|docs`: the resolved recipe and the documentation of every field."""

from __future__ import annotations

import argparse

from tuneforge.cli.common import add_recipe_args, recipe_from_args


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("config", help="Show the resolved recipe or document every field.")
    inner = p.add_subparsers(dest="config_command", required=True, metavar="{show,docs}")
    show = inner.add_parser(
        "show", help="Print the recipe with every default filled in and overrides applied.",
        description="Validate a recipe and print it fully resolved (what a run would record).",
        epilog="example:\n  tuneforge config show examples/lora.yaml --set train.learning_rate=1e-4",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_recipe_args(show, positional=True)
    show.set_defaults(func=cmd_show)
    docs = inner.add_parser("docs", help="List every recipe field with its type, default and meaning.")
    docs.set_defaults(func=cmd_docs)


def cmd_show(args: argparse.Namespace) -> int:
    from tuneforge.config.loader import dump_recipe

    print(dump_recipe(recipe_from_args(args)), end="")
    return 0


def cmd_docs(args: argparse.Namespace) -> int:
    from tuneforge.config.loader import describe_fields

    print("\n".join(describe_fields()))
    return 0
