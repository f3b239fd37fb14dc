"""`tuneforge train RECIPE`: supervised fine-tuning into a run folder (adapter or model, metrics, curves)."""

from __future__ import annotations

import argparse
import contextlib
from pathlib import Path

from tuneforge.cli.common import add_recipe_args, flag, recipe_from_args
from tuneforge.errors import UserError

EPILOG = """\
examples:
  tuneforge train examples/lora.yaml                       # LoRA on the bundled model and data
  tuneforge train examples/lora.yaml --lr 1e-4 --max-steps 200 --name my-lora
  tuneforge train examples/lora.yaml --name my-lora --resume   # continue after a crash or Ctrl-C
  tuneforge train examples/full.yaml --set train.gradient_checkpointing=true
  torchrun --nproc_per_node 2 -m tuneforge.cli.main train examples/lora.yaml   # 2 processes (DDP)

outputs (runs/<name>/): adapter/ (PEFT methods) or model/ (full, freeze), metrics.jsonl,
tensorboard/, checkpoints/ (last K + best), train_result.json, data/ (prepared splits).
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="Fine-tune a model (full, LoRA/DoRA, QLoRA, IA3, prompt/prefix tuning, freeze).",
        description="Supervised fine-tuning on prompt/response pairs. Prepares the recipe's data into the "
        "run folder (or reuses a prepared folder), estimates memory, trains with validation and "
        "checkpoints, and writes an adapter (PEFT methods) or a full model folder.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_recipe_args(p, positional=True)
    flag(p, "--data", "data.path", help="Training data: a file, a bundled dataset or a prepared folder.")
    flag(p, "--method", "train.method", help="full, lora, qlora, ia3, prompt_tuning, prefix_tuning or freeze.")
    flag(p, "--lr", "train.learning_rate", type=float, help="Peak learning rate.")
    flag(p, "--epochs", "train.epochs", type=float, help="Passes over the training data.")
    flag(p, "--max-steps", "train.max_steps", type=int, help="Stop after this many optimizer steps.")
    flag(p, "--batch-size", "train.batch_size", type=int, help="Rows per device per micro-batch.")
    flag(p, "--grad-accum", "train.grad_accum", type=int, help="Micro-batches per optimizer step.")
    flag(p, "--max-length", "train.max_length", type=int, help="Tokens per example / packed row.")
    flag(p, "--lora-r", "train.lora.r", type=int, help="LoRA rank.")
    flag(p, "--no-eval", "eval.after_train", action="store_const", const=False,
         help="Do not evaluate (baselines, tuned, forgetting, report) after training.")
    flag(p, "--resume", "train.resume", action="store_const", const=True,
         help="Continue run --name from its newest complete checkpoint.")
    p.set_defaults(func=cmd_train)


def cmd_train(args: argparse.Namespace) -> int:
    from accelerate import PartialState
    from accelerate.utils import broadcast_object_list

    from tuneforge.models import load_tokenizer, resolve_device
    from tuneforge.runs import Run, Splits, create_run
    from tuneforge.strategies.sft import evaluate_trained, hand_over, prepare_splits
    from tuneforge.train import train

    recipe = recipe_from_args(args)
    if recipe.train.resume and not recipe.run.name:
        raise UserError("--resume needs the run's name: add --name NAME (the folder under run.output_dir)")
    if recipe.train.resume:
        folder = Path(recipe.run.output_dir) / recipe.run.name
        if not folder.is_dir():
            raise UserError(f"{folder}: no such run folder to resume")
    state = PartialState(cpu=resolve_device(recipe.model.device).type == "cpu")
    tokenizer = load_tokenizer(recipe.model.name, recipe.model.trust_remote_code)
    # One run folder for all processes: the main process creates (and holds) it and prepares the data.
    box: list = [None]
    with contextlib.ExitStack() as held:
        if state.is_main_process:
            inputs = [recipe.data.path] if recipe.data and Path(recipe.data.path).exists() else []
            run = held.enter_context(create_run(recipe, "train", inputs=inputs, resume=recipe.train.resume))
            splits = prepare_splits(recipe, run, tokenizer)
            run.add_inputs([p for p in (splits.train, splits.val, splits.test) if p])
            box = [(str(run.path), splits)]
        if state.num_processes > 1:
            broadcast_object_list(box)
        path, splits = box[0]
        if not state.is_main_process:
            run = Run(path=Path(path), recipe=recipe)
        assert isinstance(splits, Splits)
        result = train(recipe, run, splits.train, splits.val, tokenizer=tokenizer)
        if state.is_main_process:
            init = f"{result.initial_val_loss:.4f}" if result.initial_val_loss is not None else "-"
            best = f"{result.best_val_loss:.4f}" if result.best_val_loss is not None else "-"
            print(f"done: {result.steps} steps, {result.train_tokens:,} tokens at {result.tokens_per_s:,.0f} "
                  f"tokens/s; validation loss {init} -> best {best}")
            print(f"output: {result.output_dir}")
            if recipe.eval.after_train:
                # A single process hands its model on (or drops it, see hand_over). Under torchrun the other
                # processes' copies are gone here: the evaluation loads the weights again, and only them.
                tuned = hand_over(result)
                if state.num_processes > 1:
                    tuned = result.model = None
                evaluate_trained(recipe, run, splits, tokenizer=tokenizer, tuned_model=tuned)
    return 0
