"""``train()``: supervised fine-tuning of a recipe's model on prepared JSONL splits, into a run folder."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch

from tuneforge import atomic
from tuneforge.config.recipe import Recipe
from tuneforge.errors import UserError
from tuneforge.runs import Run
from tuneforge.train import checkpoint as ckpt
from tuneforge.train.data import tokenize_file
from tuneforge.train.logger import MetricsLogger
from tuneforge.train.loop import (
    LoopData,
    LoopState,
    OnEval,
    OnStep,
    evaluate,
    restore_checkpoint,
    run_loop,
    set_seed,
    total_steps,
)
from tuneforge.train.memory import GB, check_fits, estimate_memory, memory_budget
from tuneforge.train.methods import (
    PROMPT_LEARNING,
    apply_method,
    count_parameters,
    is_peft,
    load_base_model,
    uses_packing,
)
from tuneforge.train.packing import make_rows, task_names
from tuneforge.train.result import TrainResult
from tuneforge.train.schedule import make_optimizer, make_scheduler

log = logging.getLogger(__name__)


def resolve_mixed_precision(setting: str, device: torch.device) -> str:
    if setting != "auto":
        return setting
    # CPUs gain little from bf16 autocast in eager mode (and lose precision); GPUs gain a lot.
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "no"


def make_accelerator(recipe: Recipe):
    from accelerate import Accelerator

    from tuneforge.models import resolve_device

    device = resolve_device(recipe.model.device)
    mp = resolve_mixed_precision(recipe.train.mixed_precision, device)
    if mp != "no" and device.type != "cuda":
        raise UserError(f"train.mixed_precision={mp} needs a GPU; use auto or no on {device.type}")
    return Accelerator(cpu=device.type == "cpu", mixed_precision=mp)


def train(
    recipe: Recipe,
    run: Run,
    train_file: Path,
    val_file: Path | None = None,
    model=None,
    tokenizer=None,
    on_eval: OnEval | None = None,
    on_step: OnStep | None = None,
) -> TrainResult:
    """Fine-tune ``recipe.model`` with ``recipe.train`` on ``train_file``; write outputs into ``run``.

    ``model``/``tokenizer`` may be passed in (already loaded base model, not yet wrapped). ``on_eval(step,
    val_loss)`` returning True stops training (hyperparameter search pruning); ``on_step(step, loss)`` is
    called after every optimizer step. Resume (``train.resume``) continues from the newest complete
    checkpoint in ``run``.
    """
    cfg = recipe.train
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    accelerator = make_accelerator(recipe)
    main = accelerator.is_main_process
    say = print if main else (lambda *a, **k: None)
    set_seed(recipe.run.seed)
    if tokenizer is None:
        from tuneforge.models import load_tokenizer

        tokenizer = load_tokenizer(recipe.model.name, recipe.model.trust_remote_code)
    if model is None:
        model = load_base_model(recipe)
    model = prepare_model(model, recipe, tokenizer)
    if cfg.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    counts = count_parameters(model)
    say(f"method {cfg.method}: {counts.describe()}")

    packing = uses_packing(cfg)
    prompt_learning = cfg.method in PROMPT_LEARNING
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    train_ex = tokenize_file(tokenizer, train_file, cfg.max_length, cfg.train_on)
    val_ex = tokenize_file(tokenizer, val_file, cfg.max_length, cfg.train_on) if val_file else None
    data = LoopData(
        train=train_ex, train_rows=make_rows(train_ex, cfg.max_length, packing),
        val=val_ex, val_rows=make_rows(val_ex, cfg.max_length, packing) if val_ex else None, pad_id=pad_id,
        tasks=tasks if len(tasks := task_names(train_ex)) > 1 else [],  # per-task loss only when tasks mix
    )
    world = accelerator.num_processes
    n_steps = total_steps(cfg, len(data.train_rows), world)
    n_tok = sum(len(e) for e in train_ex)
    say(f"data: {len(train_ex)} training examples ({n_tok:,} tokens) in {len(data.train_rows)} "
        f"{'packed ' if packing else ''}rows of <= {cfg.max_length} tokens; {n_steps} optimizer steps"
        + (f"; {len(val_ex)} validation examples" if val_ex else ""))

    widest = max(data.row_lengths)
    # Only positions with a target reach the LM head (the union over a batch's rows, see steps.py).
    most_targets = max(sum(train_ex[i].n_target for i in row) for row in data.train_rows)
    logit_tokens = cfg.batch_size * (widest if prompt_learning else min(widest, cfg.batch_size * most_targets))
    est = estimate_memory(model, cfg.batch_size * widest, cfg.gradient_checkpointing, seq_len=widest,
                          act_bytes=2 if accelerator.mixed_precision in ("bf16", "fp16") else 4,
                          logit_tokens=logit_tokens)
    limit, free_now = memory_budget(accelerator.device)
    avail = cfg.memory_limit_gb * GB if cfg.memory_limit_gb else limit
    where = "train.memory_limit_gb" if cfg.memory_limit_gb else f"{accelerator.device} (total)"
    say(f"memory estimate: {est.describe()}; limit {avail / GB:.2f} GB, free now {free_now / GB:.2f} GB")
    if est.total > free_now and est.total <= avail:
        log.warning("the run needs about %.2f GB and only %.2f GB is free now: it may swap or be killed",
                    est.total / GB, free_now / GB)
    check_fits(est, avail, cfg.method, cfg.batch_size, cfg.gradient_checkpointing, where)

    optimizer = make_optimizer(model, cfg)
    scheduler = make_scheduler(optimizer, cfg, n_steps)
    model, optimizer = accelerator.prepare(model, optimizer)
    sharded = accelerator.distributed_type.value in ("FSDP", "DEEPSPEED")
    if sharded:
        # Our checkpoint format holds whole (unsharded) tensors; sharded runs train and export, not resume.
        say(f"note: {accelerator.distributed_type.value} run: periodic checkpoints and resume are off")
        if cfg.resume:
            raise UserError(f"train.resume is not supported under {accelerator.distributed_type.value} yet")

    state = LoopState()
    resumed_from = None
    if cfg.resume:
        state, resumed_from = restore_checkpoint(accelerator, model, optimizer, scheduler, run.path / "checkpoints")
        say(f"resumed from step {resumed_from} ({run.path / 'checkpoints'})")
    elif data.val is not None and cfg.eval_at_start:
        state.initial_val_loss = evaluate(model, accelerator, data, cfg.batch_size, prompt_learning)
        say(f"step 0: validation loss {state.initial_val_loss:.4f}")

    logger = MetricsLogger(run, enabled=main)
    if state.initial_val_loss is not None and not resumed_from:
        logger.log(0, "val", loss=state.initial_val_loss)
    try:
        state = run_loop(
            model=model, optimizer=optimizer, scheduler=scheduler, accelerator=accelerator, data=data, cfg=cfg,
            run=run, n_steps=n_steps, seed=recipe.run.seed, prompt_learning=prompt_learning, logger=logger,
            state=state, on_eval=on_eval, on_step=on_step, checkpoints=not sharded,
        )
    finally:
        logger.close()

    unwrapped = accelerator.unwrap_model(model)
    final_val = state.last_val_loss
    best_file = run.path / "checkpoints" / "best.safetensors"
    exported_step = state.step
    if cfg.load_best_at_end and state.best_step is not None and state.best_step != state.step and best_file.is_file():
        ckpt.load_weights(unwrapped, best_file)
        exported_step = state.best_step
        say(f"exporting the best weights (step {state.best_step}, validation loss {state.best_val_loss:.4f})")
    accelerator.wait_for_everyone()
    out = run.path / ("adapter" if is_peft(cfg.method) else "model")
    # Sharded engines gather the full weights on every process; plain runs read them directly.
    full_state = accelerator.get_state_dict(model) if sharded else None
    if main:
        save_output(unwrapped, tokenizer, out, full_state)
    result = TrainResult(
        output_dir=out, method=cfg.method, initial_val_loss=state.initial_val_loss, best_val_loss=state.best_val_loss,
        final_val_loss=final_val, steps=state.step, train_tokens=state.train_tokens,
        tokens_per_s=state.train_tokens / max(state.train_seconds, 1e-9), trainable_params=counts.trainable,
        total_params=counts.total, best_step=state.best_step, stopped_early=state.stopped_early,
        resumed_from=resumed_from, train_seconds=state.train_seconds, model=unwrapped,
    )
    if main:
        atomic.write_text(run.path / "train_result.json", result.to_json())
        run.update_manifest(train={"output": str(out), "exported_step": exported_step, "steps": state.step})
    accelerator.wait_for_everyone()
    return result


def prepare_model(model, recipe: Recipe, tokenizer):
    """Wrap the base model for the method; ``model.adapter`` continues an adapter (PEFT methods) or is
    merged into the base before full/freeze training."""
    cfg = recipe.train
    adapter = recipe.model.adapter
    if not adapter:
        return apply_method(model, cfg, tokenizer)
    from tuneforge.models import attach_adapter

    if is_peft(cfg.method):
        return attach_adapter(model, adapter, is_trainable=True)
    return apply_method(attach_adapter(model, adapter).merge_and_unload(), cfg, tokenizer)


def save_output(model, tokenizer, out: Path, state_dict: dict | None = None) -> None:
    """Adapter folder (PEFT) or full model folder, written beside, fsynced and renamed into place."""
    extra = {"state_dict": state_dict} if state_dict is not None else {}
    with atomic.replace_folder(out) as tmp:
        model.save_pretrained(str(tmp), safe_serialization=True, **extra)
        tokenizer.save_pretrained(str(tmp))


def read_result(run_path: Path) -> dict:
    return json.loads((run_path / "train_result.json").read_text())
