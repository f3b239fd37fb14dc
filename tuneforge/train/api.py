"""``train()``: supervised fine-tuning of a recipe's model on prepared JSONL splits, into a run folder."""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
from pathlib import Path

import torch

from tuneforge import atomic
from tuneforge.config.recipe import Recipe
from tuneforge.config.train import TrainConfig
from tuneforge.errors import UserError
from tuneforge.models import varlen_attention
from tuneforge.runs import ADAPTER, CHECKPOINTS, METRICS, MODEL, TRAIN_RESULT, Run
from tuneforge.train import checkpoint as ckpt
from tuneforge.train import dist_checkpoint as dist_ckpt
from tuneforge.train import fsdp
from tuneforge.train.chunked_loss import chunkable
from tuneforge.train.data import tokenize_file
from tuneforge.train.logger import MetricsLogger
from tuneforge.train.loop import (
    Loop,
    LoopData,
    LoopState,
    OnEval,
    OnStep,
    evaluate,
    micro_batches_for_step,
    restore_checkpoint,
    run_loop,
    set_seed,
)
from tuneforge.train.memory import GB, ModelShapes, estimate_batch, memory_budget, return_freed_memory
from tuneforge.train.methods import apply_method, count_parameters, load_base_model
from tuneforge.train.packing import make_rows, padded_width, task_names
from tuneforge.train.planner import ESTIMATE_MARGIN, SAFE_SHARE, choose_plan, default_budget, explicit_budget
from tuneforge.train.result import TrainResult
from tuneforge.train.schedule import make_optimizer, make_scheduler

log = logging.getLogger(__name__)


def resolve_mixed_precision(setting: str, device: torch.device) -> str:
    if setting != "auto":
        return setting
    # GPUs gain a lot from bf16 autocast. On a CPU, auto stays float32 (the same numbers on every machine):
    # bf16 is asked for by name, where the CPU multiplies it natively (models.native_bf16).
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "no"


def make_accelerator(recipe: Recipe):
    from accelerate import Accelerator

    from tuneforge.models import native_bf16, resolve_device

    device = resolve_device(recipe.model.device)
    mp = resolve_mixed_precision(recipe.train.mixed_precision, device)
    if mp != "no" and device.type != "cuda" and not (mp == "bf16" and device.type == "cpu" and native_bf16()):
        cpu = " or a CPU with AVX512-BF16 or AMX (this one has neither)" if mp == "bf16" and device.type == "cpu" else ""
        raise UserError(f"train.mixed_precision={mp} needs a GPU{cpu}; use auto or no on {device.type}")
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
    checkpoint in ``run`` (from step 0 when there is none yet); when the run's training had already
    finished (killed during the evaluation after it), it returns the recorded result, with ``model``
    None, without training again.

    Read top to bottom, as torchtune's recipes are: set up the runtime, the model, the data; check the
    memory; build the loop; start (or resume) it; run it; write the outputs.
    """
    cfg = recipe.train
    accelerator = _setup_runtime(recipe)
    say = print if accelerator.is_main_process else _quiet
    model, tokenizer, counts = _setup_model(recipe, model, tokenizer, say)
    data = _setup_data(cfg, tokenizer, train_file, val_file)
    n_steps = cfg.total_steps(len(data.train_rows), accelerator.num_processes)
    _describe_data(cfg, data, n_steps, say)
    out = run.path / (ADAPTER if cfg.is_peft else MODEL)
    if cfg.resume and (done := finished_result(run.path, out, n_steps)) is not None:
        # Killed after training (during the evaluation that follows): the steps after the last checkpoint
        # must not run twice. The weights are in `out`; the caller evaluates them.
        say(f"training already finished at step {done.steps} ({run.path / TRAIN_RESULT}): nothing to resume")
        return done
    recipe = _plan_memory(recipe, model, data, accelerator, n_steps, say)
    loop = _setup_loop(recipe, run, model, data, accelerator, n_steps, on_eval, on_step, say)
    state, resumed_from = _start(loop, say)
    try:
        state = run_loop(loop, state)
    finally:
        loop.logger.close()
    result = _finish(loop, state, tokenizer, counts, out, resumed_from, say)
    # The optimizer, its moments and the gradients go with the loop (the accelerator holds references to what it
    # prepared until told to let go); their heap memory, and the activations', goes back to the system before the
    # caller evaluates or exports (bf16 LoRA, 6 steps: RSS 1,070 -> 779 MB).
    accelerator.free_memory()
    del loop
    return_freed_memory()
    return result


def _quiet(*args, **kwargs) -> None:
    """What the other processes print: nothing (the main process speaks for the run)."""


def _setup_runtime(recipe: Recipe):
    if recipe.train.num_threads:
        torch.set_num_threads(recipe.train.num_threads)
    accelerator = make_accelerator(recipe)
    set_seed(recipe.run.seed)
    return accelerator


def _setup_model(recipe: Recipe, model, tokenizer, say):
    """The tokenizer and the base model (loaded unless given), wrapped for the method; its parameter counts."""
    if tokenizer is None:
        from tuneforge.models import load_tokenizer

        tokenizer = load_tokenizer(recipe.model.name, recipe.model.trust_remote_code)
    if model is None:
        model = load_base_model(recipe)
    model = prepare_model(model, recipe, tokenizer)
    if recipe.train.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    counts = count_parameters(model)
    say(f"method {recipe.train.method}: {counts.describe()}")
    if varlen_attention.in_use(model):
        say("attention: PyTorch's variable-length flash kernel, each packed example within itself "
            "(model.attn_implementation: sdpa to turn it off)")
    return model, tokenizer, counts


def _setup_data(cfg: TrainConfig, tokenizer, train_file: Path, val_file: Path | None) -> LoopData:
    """Tokenized examples and the rows (packed unless the method forbids it) the loop batches."""
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    train_ex = tokenize_file(tokenizer, train_file, cfg.max_length, cfg.train_on)
    val_ex = tokenize_file(tokenizer, val_file, cfg.max_length, cfg.train_on) if val_file else None
    return LoopData(
        train=train_ex, train_rows=make_rows(train_ex, cfg.max_length, cfg.packs),
        val=val_ex, val_rows=make_rows(val_ex, cfg.max_length, cfg.packs) if val_ex else None, pad_id=pad_id,
        tasks=tasks if len(tasks := task_names(train_ex)) > 1 else [],  # per-task loss only when tasks mix
    )


def _describe_data(cfg: TrainConfig, data: LoopData, n_steps: int, say) -> None:
    n_tok = sum(len(e) for e in data.train)
    say(f"data: {len(data.train)} training examples ({n_tok:,} tokens) in {len(data.train_rows)} "
        f"{'packed ' if cfg.packs else ''}rows of <= {cfg.max_length} tokens; {n_steps} optimizer steps"
        + (f"; {len(data.val)} validation examples" if data.val else ""))


def _estimator(model, cfg: TrainConfig, data: LoopData, accelerator, n_steps: int, seed: int):
    """(rows per micro-batch, checkpointing) -> the memory estimate of the run's heaviest micro-batch.

    The micro-batches are the ones the run will train on (``micro_batches_for_step`` of its ``n_steps``
    steps, cut into each process's share), not the widest row times the rows: a short run on mostly
    short examples pads far less than the worst case.
    """
    shapes = ModelShapes.of(model)
    chunked = chunkable(model, cfg.prompt_learning)[0] is not None
    # activations are half precision under autocast, or when the model's weights are (model.dtype bfloat16:
    # a LoRA run's frozen base and everything computed from it; its adapters stay float32)
    half = accelerator.mixed_precision in ("bf16", "fp16") or next(model.parameters()).dtype in (
        torch.bfloat16, torch.float16)
    act_bytes = 2 if half else 4
    masks = not varlen_attention.in_use(model)  # the variable-length kernel needs no [L x L] masks
    device_type = next(model.parameters()).device.type  # the chunked loss's chunks are larger on a GPU
    lengths = data.row_lengths
    targets = [sum(data.train[i].n_target for i in row) for row in data.train_rows]
    world = accelerator.num_processes
    steps = [[r for micro in micro_batches_for_step(k, data, cfg, world, seed) for r in micro]
             for k in range(n_steps)]

    def estimate(rows: int, checkpointing: bool):
        seen = {(len(mb), padded_width(max(lengths[r] for r in mb)), max(targets[r] for r in mb),
                 sum(targets[r] for r in mb))
                for step in steps for mb in (step[s : s + rows] for s in range(0, len(step), rows))}
        best = None
        for n, width, most, total in seen:
            # Only positions with a target reach the LM head: those of the chunked loss, or the union of
            # the rows' target columns in the model's own forward (at most rows x the most in a row).
            positions = total if chunked and not cfg.prompt_learning else min(n * width, n * most)
            est = estimate_batch(shapes, n, width, checkpointing, act_bytes, positions, chunked, masks=masks,
                                 device_type=device_type)
            best = est if best is None or est.total > best.total else best
        return best

    return estimate


def _plan_memory(recipe: Recipe, model, data: LoopData, accelerator, n_steps: int, say) -> Recipe:
    """Choose micro-batch size, accumulation and checkpointing that keep the step's rows and fit the
    memory budget (``planner``); print the plan; stop with advice when nothing fits."""
    cfg = recipe.train
    limit, free_now = memory_budget(accelerator.device)
    budget = explicit_budget(cfg.memory_limit_gb) if cfg.memory_limit_gb else default_budget(limit, free_now)
    if accelerator.num_processes > 1:  # every process must take the same plan (the same accumulation)
        budget = float(accelerator.gather(torch.tensor([budget], device=accelerator.device)).min())
    where = (f"train.memory_limit_gb {cfg.memory_limit_gb:g} less {ESTIMATE_MARGIN:.0%} for the estimate's error"
             if cfg.memory_limit_gb else f"{SAFE_SHARE:.0%} of free memory")
    estimate = _estimator(model, cfg, data, accelerator, n_steps, recipe.run.seed)
    plan = choose_plan(cfg.batch_size * cfg.grad_accum, estimate, budget, cfg.gradient_checkpointing, cfg.method,
                       max_micro=cfg.batch_size)
    say(f"memory plan: {plan.describe()}; estimate {plan.estimate.describe()}; budget {budget / GB:.2f} GB "
        f"({where}), free now {free_now / GB:.2f} GB")
    if plan.estimate.total > free_now:
        log.warning("the run needs about %.2f GB and only %.2f GB is free now: it may swap or be killed",
                    plan.estimate.total / GB, free_now / GB)
    if plan.gradient_checkpointing and not cfg.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    train_cfg = cfg.model_copy(update={"batch_size": plan.batch_size, "grad_accum": plan.grad_accum,
                                       "gradient_checkpointing": plan.gradient_checkpointing})
    return recipe.model_copy(update={"train": train_cfg})


def _setup_loop(recipe: Recipe, run: Run, model, data: LoopData, accelerator, n_steps: int,
                on_eval: OnEval | None, on_step: OnStep | None, say) -> Loop:
    cfg = recipe.train
    kind = fsdp.engine(cfg.distributed, accelerator.distributed_type.value, accelerator.num_processes)
    if kind == "fsdp":  # FSDP2 replaces parameters by shards: the optimizer is built over the shards
        model = fsdp.shard(model, accelerator.device)
        say(f"FSDP2: weights, gradients and optimizer state sharded over {accelerator.num_processes} processes")
    optimizer = make_optimizer(model, cfg)
    scheduler = make_scheduler(optimizer, cfg, n_steps)
    if kind != "fsdp":
        model, optimizer = accelerator.prepare(model, optimizer)
    sharded = kind in fsdp.SHARDED_ENGINES
    if kind not in fsdp.RESUMABLE_ENGINES:
        # Only FSDP's shards have a checkpoint format here (torch.distributed.checkpoint); DeepSpeed's has not.
        say(f"note: {accelerator.distributed_type.value} run: periodic checkpoints and resume are off")
        if cfg.resume:
            raise UserError(f"train.resume is not supported under {accelerator.distributed_type.value} yet")
    logger = MetricsLogger(run, enabled=accelerator.is_main_process)
    return Loop(model=model, optimizer=optimizer, scheduler=scheduler, accelerator=accelerator, data=data, cfg=cfg,
                run=run, n_steps=n_steps, seed=recipe.run.seed, logger=logger, on_eval=on_eval, on_step=on_step,
                sharded=sharded, dist_checkpoints=sharded and kind in fsdp.RESUMABLE_ENGINES)


def _start(loop: Loop, say) -> tuple[LoopState, int | None]:
    """A fresh state (with the step-0 validation loss), or the newest checkpoint's when resuming."""
    cfg, run = loop.cfg, loop.run
    state, resumed_from = LoopState(), None
    if cfg.resume:
        restored = restore_checkpoint(loop)
        if restored is not None:
            state, resumed_from = restored
            say(f"resumed from step {resumed_from} ({run.path / CHECKPOINTS})")
        else:  # killed before its first checkpoint: nothing is lost by starting over, in the same folder
            say(f"no complete checkpoint in {run.path / CHECKPOINTS} yet: starting from step 0")
        if loop.main:
            forget_metrics_after(run, resumed_from)
            loop.logger.resumed_at(resumed_from)
    if resumed_from is None and loop.data.val is not None and cfg.eval_at_start:
        state.initial_val_loss = evaluate(loop.model, loop.accelerator, loop.data, cfg.batch_size, cfg.prompt_learning)
        say(f"step 0: validation loss {state.initial_val_loss:.4f}")
    if state.initial_val_loss is not None and not resumed_from:
        loop.logger.log(0, "val", loss=state.initial_val_loss)
    return state, resumed_from


def _finish(loop: Loop, state: LoopState, tokenizer, counts, out: Path, resumed_from: int | None, say) -> TrainResult:
    """Export the best (or last) weights to ``out``, then record the result: its file means "finished"."""
    cfg, run, accelerator = loop.cfg, loop.run, loop.accelerator
    unwrapped = accelerator.unwrap_model(loop.model)
    best_file = run.path / CHECKPOINTS / "best.safetensors"
    exported_step = state.step
    if cfg.load_best_at_end and state.best_step is not None and state.best_step != state.step and best_file.is_file():
        if loop.dist_checkpoints:
            dist_ckpt.load_best(loop.model, best_file, loop.main)
        else:
            ckpt.load_weights(unwrapped, best_file)
        exported_step = state.best_step
        say(f"exporting the best weights (step {state.best_step}, validation loss {state.best_val_loss:.4f})")
    accelerator.wait_for_everyone()
    varlen_attention.use_sdpa(unwrapped)  # what comes next may generate with a KV cache
    # Sharded engines gather the full weights on every process; plain runs read them directly.
    if loop.dist_checkpoints:
        full_state = fsdp.full_state(loop.model, trainable_only=False)
    else:
        full_state = accelerator.get_state_dict(loop.model) if loop.sharded else None
    if loop.main:
        save_output(unwrapped, tokenizer, out, full_state)
    result = TrainResult(
        output_dir=out, method=cfg.method, initial_val_loss=state.initial_val_loss, best_val_loss=state.best_val_loss,
        final_val_loss=state.last_val_loss, steps=state.step, train_tokens=state.train_tokens,
        tokens_per_s=state.train_tokens / max(state.train_seconds, 1e-9), trainable_params=counts.trainable,
        total_params=counts.total, best_step=state.best_step, stopped_early=state.stopped_early,
        resumed_from=resumed_from, train_seconds=state.train_seconds, model=unwrapped,
    )
    if loop.main:  # written after the output folder, atomically: its presence means training finished
        atomic.write_text(run.path / TRAIN_RESULT, result.to_json())
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

    if cfg.is_peft:
        return attach_adapter(model, adapter, is_trainable=True)
    return apply_method(attach_adapter(model, adapter).merge_and_unload(), cfg, tokenizer)


def save_output(model, tokenizer, out: Path, state_dict: dict | None = None) -> None:
    """Adapter folder (PEFT) or full model folder, written beside and swapped into place (the shared
    atomic helper: an earlier output stays whole until the new one is complete and fsynced)."""
    for stale in out.parent.glob(f".{out.name}.*.tmp"):  # left by a process killed while writing one
        shutil.rmtree(stale, ignore_errors=True)
    extra = {"state_dict": state_dict} if state_dict is not None else {}
    with atomic.replace_folder(out) as tmp:
        model.save_pretrained(str(tmp), safe_serialization=True, **extra)
        tokenizer.save_pretrained(str(tmp))
        ckpt.crash_point("export:written")  # the new output complete, not yet in place


def forget_metrics_after(run: Run, step: int | None) -> None:
    """Drop the training/validation rows of metrics.jsonl that a resumed run logs again (those after
    ``step``; all of them when it starts over), and a last line cut short by the kill."""
    path = run.path / METRICS
    if not path.is_file():
        return
    kept = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            row = json.loads(line)
        except ValueError:  # half-written when the process died
            continue
        redone = row.get("split") in ("train", "val") and isinstance(row.get("step"), int) and (
            step is None or row["step"] > step)
        if not redone:
            kept.append(line + "\n")
    atomic.write_text(path, "".join(kept))


def finished_result(run_path: Path, out: Path, n_steps: int) -> TrainResult | None:
    """The recorded result when this run folder's training already ended (all ``n_steps``, or stopped
    early) and its output folder is in place; None when there is training left to do."""
    try:
        data = read_result(run_path)
    except (OSError, ValueError):
        return None
    if not out.is_dir() or Path(str(data.get("output_dir"))).name != out.name:
        return None
    if not (data.get("stopped_early") or int(data.get("steps") or 0) >= n_steps):
        return None  # e.g. resumed with a larger max_steps: keep training from the newest checkpoint
    known = {f.name for f in dataclasses.fields(TrainResult)} - {"model"}
    return TrainResult(**{**{k: v for k, v in data.items() if k in known}, "output_dir": out})


def read_result(run_path: Path) -> dict:
    return json.loads((run_path / TRAIN_RESULT).read_text())
