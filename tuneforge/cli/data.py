"""`tuneforge data prepare|validate|templates`: raw data -> checked instruction splits with a quality report."""

from __future__ import annotations

import argparse
import contextlib
import json
from pathlib import Path
from typing import Any

from tuneforge.cli.common import add_recipe_args, flag, recipe_from_args
from tuneforge.errors import UserError

PREPARE_EPILOG = """\
examples:
  tuneforge data prepare --input rotten-tomatoes --template sentiment --max-examples 2000 --out data/rt
  tuneforge data prepare --input drug-reviews --template sentiment --stratify-by label
  tuneforge data prepare --input reviews.csv --template star_rating --arg text_field=body --arg rating_field=stars
  tuneforge data prepare --input chats.jsonl --redact-pii --strict --out data/chats   # chat/alpaca/sharegpt auto-detected

Writes train.jsonl, val.jsonl, test.jsonl (chat messages + meta), quality.json and splits.json. Without
--out the files go to runs/<name>/data/ (a run folder with the resolved recipe and input hashes).
"""


def _data_flags(p: argparse.ArgumentParser) -> None:
    flag(p, "--format", "data.format", choices=["auto", "chat", "alpaca", "sharegpt", "prompt_completion", "raw"],
         help="Record format (default auto).")
    flag(p, "--template", "data.template", help="Template for raw records (see `tuneforge data templates`).")
    p.add_argument("--arg", action="append", default=[], metavar="KEY=VALUE",
                   help="Template argument, e.g. --arg text_field=review (repeatable) [data.template_args.KEY]")
    flag(p, "--split", "data.split", help="Split of a datasets save_to_disk DatasetDict to read.")
    flag(p, "--max-length", "data.max_length", type=int, help="Most tokens per example (longer ones are dropped).")
    flag(p, "--system-prompt", "data.system_prompt", help="System message prepended to every example.")
    flag(p, "--strict", "data.strict", action="store_const", const=True, help="Fail on any data problem.")
    flag(p, "--redact-pii", "data.redact_pii", action="store_const", const=True,
         help="Replace e-mails, phone and card numbers, IBANs, SSNs, IP addresses and secrets with placeholders.")
    flag(p, "--keep-duplicates", "data.dedupe", action="store_const", const=False,
         help="Keep exact duplicates (they still share a split).")
    flag(p, "--keep-low-information", "data.drop_low_information", action="store_const", const=False,
         help="Keep answers like 'ok' or 'thanks' (they are still reported).")
    p.add_argument("--no-tokenizer", action="store_true",
                   help="Estimate token lengths (characters/4) instead of loading the model's tokenizer.")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("data", help="Prepare, validate and split instruction data.",
                       description="Turn raw data into checked train/val/test instruction data.")
    inner = p.add_subparsers(dest="data_command", required=True, metavar="{prepare,validate,templates}")

    prep = inner.add_parser(
        "prepare", help="Raw data -> train/val/test chat JSONL with a quality report.",
        description="Read raw data (JSONL, JSON, CSV/TSV, Parquet, datasets folder or a bundled dataset), turn it "
        "into instruction pairs with a template, check it, deduplicate it and split it deterministically.",
        epilog=PREPARE_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_recipe_args(prep)
    flag(prep, "--input", "data.path", help="Data file, folder, or bundled name (rotten-tomatoes, drug-reviews).")
    prep.add_argument("--out", help="Output folder (default: runs/<name>/data/).")
    flag(prep, "--max-examples", "data.max_examples", type=int, help="Keep a seeded sample of at most N examples.")
    flag(prep, "--val-fraction", "data.val_fraction", type=float, help="Share for validation (default 0.1).")
    flag(prep, "--test-fraction", "data.test_fraction", type=float, help="Share for test (default 0.1).")
    flag(prep, "--stratify-by", "data.stratify_by", choices=["label"], help="Keep label shares equal across splits.")
    _data_flags(prep)
    prep.set_defaults(func=cmd_prepare)

    val = inner.add_parser(
        "validate", help="Print the quality report of a data file without writing splits.",
        description="Check data: malformed rows (file:line:field), empty or low-information answers, duplicates, "
        "PII, token lengths and label balance. Exit status 2 with --strict when anything is found.",
        epilog="examples:\n  tuneforge data validate chats.jsonl\n"
        "  tuneforge data validate reviews.csv --template sentiment --report quality.json\n"
        "  tuneforge data validate runs/my-run/data        # a prepared folder",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_recipe_args(val)
    val.add_argument("data.path", metavar="PATH", nargs="?", default=None, help="Data file or folder [data.path]")
    val.add_argument("--report", help="Also save the report as JSON here.")
    _data_flags(val)
    val.set_defaults(func=cmd_validate)

    tpl = inner.add_parser("templates", help="List the prompt templates with an example each.",
                           description="Built-in templates; pass a .yaml file for your own (Jinja2 prompt/response).")
    tpl.set_defaults(func=cmd_templates)


def _recipe(args: argparse.Namespace) -> Any:
    for text in args.arg:
        if "=" not in text:
            raise UserError(f"--arg {text!r} must look like KEY=VALUE (e.g. --arg text_field=review)")
        key, value = text.split("=", 1)
        args.set.append(f"data.template_args.{key.strip()}={value}")
    return recipe_from_args(args)


def _tokenizer(args: argparse.Namespace, recipe: Any) -> Any:
    if args.no_tokenizer:
        return None
    from tuneforge.models import load_tokenizer

    return load_tokenizer(recipe.model.name, recipe.model.trust_remote_code)


def cmd_prepare(args: argparse.Namespace) -> int:
    from tuneforge.data.prepare import prepare_data, resolve_input
    from tuneforge.data.quality import format_report

    recipe = _recipe(args)
    cfg = recipe.data
    run = None
    with contextlib.ExitStack() as held:
        if args.out:
            out = Path(args.out)
        else:
            from tuneforge.runs import DATA, create_run

            run = held.enter_context(create_run(recipe, "data", inputs=[resolve_input(cfg)]))
            out = run.path / DATA
        prepared = prepare_data(cfg, out, _tokenizer(args, recipe), seed=recipe.run.seed)
        if run is not None:
            run.update_manifest(data=prepared.manifest)
            run.log_metrics(split="data", **{f"examples_{k}": v for k, v in prepared.manifest["counts"].items()},
                            problems=prepared.report["problem_count"])
    print(format_report(prepared.report))
    print(f"wrote {prepared.train}, {prepared.val.name}, {prepared.test.name}, quality.json, splits.json")
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    from tuneforge.data.prepare import validate_data
    from tuneforge.data.quality import format_report

    recipe = _recipe(args)
    strict = recipe.data.strict
    report = validate_data(recipe.data.model_copy(update={"strict": False}), _tokenizer(args, recipe),
                           seed=recipe.run.seed)
    print(format_report(report))
    if args.report:
        Path(args.report).write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    if strict and report["problem_count"]:
        raise UserError(f"{report['problem_count']} data problem(s) and --strict is on (data.strict)",
                        report["problems"][:30])
    return 0


def cmd_templates(args: argparse.Namespace) -> int:
    from tuneforge.data.templates import BUILTIN

    for t in BUILTIN.values():
        pair = t.apply(t.example, t.args({}) if t.name != "classify" else t.args({"label_set": ["spam", "ham"]}))
        fields = ", ".join(f"{k}={v}" for k, v in t.fields.items())
        print(f"{t.name}: {t.description}")
        print(f"  fields: {fields}" + (f"; options: {', '.join(t.options)}" if t.options else ""))
        print("  example prompt:  " + pair.prompt.replace("\n", "\n                   "))
        print(f"  example answer:  {pair.answer}\n")
    print("Your own: a .yaml file with Jinja2 `prompt:` and `response:` (optional `label_set:`), passed as --template FILE.")
    return 0
