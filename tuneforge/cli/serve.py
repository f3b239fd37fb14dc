"""`tuneforge serve`: an OpenAI-compatible HTTP server for a base model and any number of adapters."""

from __future__ import annotations

import argparse
from pathlib import Path

from tuneforge.cli.common import add_recipe_args, flag, recipe_from_args

DEFAULT_STATE_DIR = "serve-state"  # the fine-tuning API's folder when neither the recipe nor a flag names one


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "serve",
        help="OpenAI-compatible server: one base model, many adapters, closed by default.",
        description="Serve /v1/chat/completions, /v1/completions and /v1/models (streaming and not). "
        "The request's `model` picks the base model or an adapter; adapters load on first use and share "
        "the base weights. Concurrent requests are batched. Binds 127.0.0.1 and requires an API key "
        "(from $TUNEFORGE_API_KEY or --api-key-file) on every route except /health.",
        epilog="examples:\n"
        "  export TUNEFORGE_API_KEY=$(openssl rand -hex 32)\n"
        "  tuneforge serve runs/lora-sentiment runs/lora-summaries     # base from the runs' recipe\n"
        "  tuneforge serve --model smollm2-135m-instruct --adapter-dir support=runs/support/adapter\n"
        "  tuneforge serve --model runs/lora/export/merged-int8 --no-auth   # int8 copy, local only\n"
        "  tuneforge serve --dtype bfloat16      # on a CPU with AVX512-BF16 or AMX: quicker steps at 8+ rows\n\n"
        "  # then, from Python:\n"
        "  from openai import OpenAI\n"
        "  client = OpenAI(base_url='http://127.0.0.1:8000/v1', api_key=KEY)\n"
        "  client.chat.completions.create(model='lora-sentiment', messages=[...], stream=True)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("runs", nargs="*", metavar="RUN",
                   help="Trained run folders; each one's adapter is served under the run's folder name.")
    add_recipe_args(p)
    p.add_argument("--adapter-dir", action="append", default=[], metavar="NAME=PATH",
                   help="Serve the adapter folder PATH as model NAME (repeatable).")
    flag(p, "--dtype", "model.dtype", choices=["auto", "float32", "bfloat16", "float16"],
         help="Weights' dtype (default auto: bfloat16 on a GPU that has it, else float32). bfloat16 on a CPU "
         "that multiplies it natively (AVX512-BF16, AMX) halves the bytes read per step and speeds up batched "
         "steps and prompts (BENCHMARKS.md, serving); answers then differ from float32's by its rounding. "
         "An int8 export keeps its own format.")
    flag(p, "--host", "serve.host", help="Bind address (default 127.0.0.1).")
    flag(p, "--port", "serve.port", type=int, help="TCP port (default 8000).")
    flag(p, "--served-name", "serve.served_name", help="Model id of the base model in the API.")
    flag(p, "--max-tokens", "serve.max_tokens", type=int, help="Cap on max_tokens per request.")
    flag(p, "--max-concurrent", "serve.max_concurrent", type=int, help="Rows generated together in one batch.")
    flag(p, "--max-queue", "serve.max_queue", type=int, help="Rows that may wait; beyond it: 429.")
    flag(p, "--timeout", "serve.request_timeout_s", type=float, help="Per-request time limit in seconds.")
    flag(p, "--state-dir", "serve.state_dir",
         help="Folder of the fine-tuning API's files, jobs and runs (default serve-state).")
    p.add_argument("--no-fine-tuning", action="store_true",
                   help="Serve without the fine-tuning API (/v1/files, /v1/fine_tuning/jobs).")
    p.add_argument("--api-key-file", help="File holding the API key (instead of the environment variable).")
    p.add_argument("--no-auth", action="store_true",
                   help="Serve without an API key. Refused unless the host is a loopback address.")
    p.set_defaults(func=cmd_serve)


def resolve_adapters(args: argparse.Namespace, overrides_model: str | None) -> tuple[str | None, dict[str, str]]:
    """Base model implied by the run folders (if any) and the adapters they plus --adapter-dir name."""
    from tuneforge.errors import UserError
    from tuneforge.runs import open_run

    adapters: dict[str, str] = {}
    base: str | None = None
    for folder in args.runs:
        run = open_run(folder)
        weights = run.tuned_weights()
        if weights is None or weights.adapter is None:
            hint = f"; serve the full model with --model {weights.path}" if weights is not None else ""
            raise UserError(f"{run.path}: no adapter/ folder to serve{hint}")
        if base is not None and run.recipe.model.name != base:
            raise UserError(f"{run.path}: base model {run.recipe.model.name!r} differs from {base!r}; "
                            "one server shares one base model")
        base = run.recipe.model.name
        adapters[run.name] = str(weights.adapter)
    for item in args.adapter_dir:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise UserError(f"--adapter-dir {item!r}: use NAME=PATH")
        adapters[name] = path
    if overrides_model and base and Path(overrides_model) != Path(base) and overrides_model != base:
        raise UserError(f"--model {overrides_model!r} differs from the runs' base model {base!r}")
    return base, adapters


def cmd_serve(args: argparse.Namespace) -> int:
    from tuneforge.runs import ADAPTER
    from tuneforge.serve.security import resolve_api_key
    from tuneforge.serve.server import build, serve_forever

    base, adapters = resolve_adapters(args, getattr(args, "model.name", None))
    if base and getattr(args, "model.name", None) is None:
        setattr(args, "model.name", base)
    recipe = recipe_from_args(args)
    if recipe.model.adapter:  # --adapter PATH: served under its run's name (the folder above adapter/)
        folder = Path(recipe.model.adapter).resolve()
        adapters.setdefault(folder.parent.name if folder.name == ADAPTER else folder.name, str(folder))
    cfg = recipe.serve.model_copy(update={"adapters": {**recipe.serve.adapters, **adapters}})
    if args.no_fine_tuning:
        cfg = cfg.model_copy(update={"state_dir": None})
    elif cfg.state_dir is None:
        cfg = cfg.model_copy(update={"state_dir": DEFAULT_STATE_DIR})
    api_key = resolve_api_key(cfg.api_key_env, args.api_key_file, args.no_auth, cfg.host)
    served = build(recipe.model, cfg, api_key)
    names = ", ".join([served.base_id, *cfg.adapters])
    print(f"tuneforge serve: http://{cfg.host}:{cfg.port}/v1  models: {names}  "
          f"auth: {'API key' if api_key else 'OFF (loopback only)'}  "
          f"fine-tuning: {cfg.state_dir or 'off'}")
    print(f"tuneforge serve: {served.engine.describe()}")
    serve_forever(served, cfg)
    return 0
