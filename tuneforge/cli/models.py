"""`tuneforge models` (the bundled models), `tuneforge generate` and `tuneforge chat` (talk to any
loadable model, optionally with an adapter)."""

from __future__ import annotations

import argparse
import sys

from tuneforge.cli.common import add_recipe_args, recipe_from_args


def register(sub: argparse._SubParsersAction) -> None:
    m = sub.add_parser(
        "models",
        help="List the bundled models (usable offline by name with --model).",
        description="List the models that ship in registry packages, and whether each is converted yet.",
    )
    m.set_defaults(func=cmd_models)

    p = sub.add_parser(
        "generate",
        help="Answer one prompt (streams to the terminal).",
        description="Answer one prompt with the base model (bundled SmolLM2 by default) or a tuned adapter.",
        epilog="examples:\n  tuneforge generate --prompt 'Why is the sky blue?'\n"
        "  tuneforge generate --prompt 'Review: great film. Sentiment?' --adapter runs/lora/adapter",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_recipe_args(p)
    p.add_argument("--prompt", "-p", required=True, help="The user message.")
    _gen_args(p)
    p.set_defaults(func=cmd_generate)

    c = sub.add_parser(
        "chat",
        help="Interactive chat in the terminal (streaming).",
        description="Chat with a model. Type a message and press Enter; /reset clears history, /exit quits.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_recipe_args(c)
    _gen_args(c)
    c.set_defaults(func=cmd_chat)


def cmd_models(args: argparse.Namespace) -> int:
    from tuneforge.config.recipe import BUNDLED_DEFAULT
    from tuneforge.models import BUNDLED, bundled_cache_folder

    for name, model in BUNDLED.items():
        folder = bundled_cache_folder(name)
        if folder is None:
            state = "not converted yet (converted once on first use)"
        else:
            size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) / 1e9
            halves = sorted(p.name for p in folder.iterdir() if (p / "checksums.json").is_file())
            also = f", also saved in {' and '.join(halves)}" if halves else ""
            state = f"converted: {folder} ({size:.1f} GB{also})"
        default = " (default)" if name == BUNDLED_DEFAULT else ""
        print(f"{name}{default}\n  {model.description}\n  package: {model.install_hint}\n  {state}")
    return 0


def _gen_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--system", help="Optional system message.")
    p.add_argument("--max-new-tokens", type=int, default=256, help="Most tokens to generate (default 256).")
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default); >0 samples.")
    p.add_argument("--top-p", type=float, default=1.0, help="Nucleus sampling mass when sampling.")


def _load(args: argparse.Namespace):
    from tuneforge.models import load_model, load_tokenizer

    recipe = recipe_from_args(args)
    tokenizer = load_tokenizer(recipe.model.name, recipe.model.trust_remote_code)
    model = load_model(recipe.model)
    return recipe, model, tokenizer


def cmd_generate(args: argparse.Namespace) -> int:
    from tuneforge.models.generate import stream_chat

    recipe, model, tokenizer = _load(args)
    messages = [{"role": "system", "content": args.system}] if args.system else []
    messages.append({"role": "user", "content": args.prompt})
    for piece in stream_chat(
        model, tokenizer, messages, max_new_tokens=args.max_new_tokens,
        temperature=args.temperature, top_p=args.top_p, seed=recipe.run.seed,
    ):
        sys.stdout.write(piece)
        sys.stdout.flush()
    sys.stdout.write("\n")
    return 0


def cmd_chat(args: argparse.Namespace) -> int:
    from tuneforge.models.generate import stream_chat

    recipe, model, tokenizer = _load(args)
    system = [{"role": "system", "content": args.system}] if args.system else []
    history: list[dict[str, str]] = []
    print(f"chatting with {recipe.model.name}" + (f" + {recipe.model.adapter}" if recipe.model.adapter else ""))
    print("/reset clears the conversation, /exit (or Ctrl-D) quits")
    while True:
        try:
            line = input("you> ").strip()
        except EOFError:
            print()
            return 0
        if not line:
            continue
        if line in ("/exit", "/quit"):
            return 0
        if line == "/reset":
            history.clear()
            print("(conversation cleared)")
            continue
        history.append({"role": "user", "content": line})
        sys.stdout.write("assistant> ")
        answer = []
        for piece in stream_chat(
            model, tokenizer, system + history, max_new_tokens=args.max_new_tokens,
            temperature=args.temperature, top_p=args.top_p,
        ):
            answer.append(piece)
            sys.stdout.write(piece)
            sys.stdout.flush()
        sys.stdout.write("\n")
        history.append({"role": "assistant", "content": "".join(answer)})
