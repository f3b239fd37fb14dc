"""The training loop: accelerate for devices and processes, our own batching, checkpoints and resume.

Global batch = batch_size x processes x grad_accum rows. Every optimizer step's loss is the mean over
all target tokens of the step, on all processes (not a mean of per-batch means), so one process with
batch 4 and two processes with batch 2 compute the same gradient.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from tuneforge.config.train import TrainConfig
from tuneforge.provenance import seed_everything
from tuneforge.runs import CHECKPOINTS, Run
from tuneforge.train import checkpoint as ckpt
from tuneforge.train import dist_checkpoint as dist_ckpt
from tuneforge.train.data import TokenizedExample
from tuneforge.train.packing import collate, plan_epoch
from tuneforge.train.steps import loss_sum, loss_sum_by_task

log = logging.getLogger(__name__)

OnEval = Callable[[int, float], bool | None]
OnStep = Callable[[int, float], None]


@dataclass
class LoopState:
    """Everything besides weights/optimizer/scheduler/RNG that resume needs (saved as trainer_state.json)."""

    step: int = 0
    train_tokens: int = 0
    train_seconds: float = 0.0
    initial_val_loss: float | None = None
    best_val_loss: float | None = None
    best_step: int | None = None
    last_val_loss: float | None = None
    last_val_step: int | None = None
    bad_evals: int = 0
    stopped_early: bool = False
    history: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class LoopData:
    train: list[TokenizedExample]
    train_rows: list[list[int]]
    val: list[TokenizedExample] | None
    val_rows: list[list[int]] | None
    pad_id: int
    tasks: list[str] = field(default_factory=list)  # task tags of the training examples (multi-task data)
    _plans: dict[tuple[int, int, int], list[list[int]]] = field(default_factory=dict, repr=False)
    _row_lengths: list[int] | None = field(default=None, repr=False)

    @property
    def row_lengths(self) -> list[int]:
        if self._row_lengths is None:
            self._row_lengths = [sum(len(self.train[i]) for i in row) for row in self.train_rows]
        return self._row_lengths

    def plan(self, global_batch: int, seed: int, epoch: int, group_by_length: bool) -> list[list[int]]:
        """The epoch's micro-batches, computed once per epoch (the newest one only is kept)."""
        key = (global_batch, seed, epoch)
        if key not in self._plans:
            self._plans.clear()
            self._plans[key] = plan_epoch(self.row_lengths, global_batch, seed, epoch, group_by_length)
        return self._plans[key]


@dataclass
class Loop:
    """What the loop trains with, fixed for the whole run (what changes step by step is ``LoopState``)."""

    model: Any
    optimizer: Any
    scheduler: Any
    accelerator: Any
    data: LoopData
    cfg: TrainConfig
    run: Run
    n_steps: int
    seed: int
    logger: Any
    on_eval: OnEval | None = None
    on_step: OnStep | None = None
    sharded: bool = False  # FSDP/DeepSpeed: parameters are shards, not whole tensors
    dist_checkpoints: bool = False  # FSDP: checkpoints through torch.distributed.checkpoint (dist_checkpoint.py)

    @property
    def main(self) -> bool:
        return self.accelerator.is_main_process

    @property
    def checkpoints(self) -> bool:
        return not self.sharded or self.dist_checkpoints


def micro_batches_for_step(step: int, data: LoopData, cfg, world: int, seed: int) -> list[list[int]]:
    """The global micro-batches (row lists) of optimizer step ``step``: a pure function of the step.

    The epoch is planned in optimizer steps (``batch_size x processes x grad_accum`` rows each), then
    each step's rows are cut into micro-batches: the rows a step trains on do not depend on how it is
    split, so the memory planner can change the split without changing the losses.
    """
    spe = cfg.steps_per_epoch(len(data.train_rows), world)
    epoch, k = divmod(step, spe)
    plan = data.plan(cfg.batch_size * world * cfg.grad_accum, seed, epoch, cfg.group_by_length)
    rows = plan[k] if k < len(plan) else []
    micro = cfg.batch_size * world
    return [rows[s : s + micro] for s in range(0, len(rows), micro)]


def evaluate(model, accelerator, data: LoopData, batch_size: int, prompt_learning: bool) -> float:
    """Token-weighted validation loss over the whole validation split (shared across processes)."""
    rows = sorted(data.val_rows, key=lambda r: -sum(len(data.val[i]) for i in r))
    batches = [rows[s : s + batch_size] for s in range(0, len(rows), batch_size)]
    mine = batches[accelerator.process_index :: accelerator.num_processes]
    was_training = model.training
    model.eval()
    total = torch.zeros(2, dtype=torch.float64, device=accelerator.device)
    # Every process runs the same number of forwards (a dummy batch with no targets where it has none
    # left): a DDP forward can start a collective (buffer broadcast) that every process must join.
    n_each = -(-len(batches) // accelerator.num_processes)
    with torch.no_grad(), accelerator.autocast():
        for i in range(n_each):
            b = collate(data.val, mine[i], data.pad_id) if i < len(mine) else _dummy_batch(data.pad_id)
            total[0] += loss_sum(model, b, prompt_learning).double()
            total[1] += b.n_target
    total = accelerator.reduce(total, "sum")
    if was_training:
        model.train()
    return float(total[0] / total[1].clamp(min=1))


def _dummy_batch(pad_id: int):
    # A process with no rows in the last micro-batch still runs forward/backward (zero loss) so that
    # every process joins the gradient all-reduce.
    batch = collate([TokenizedExample([pad_id], [-100])], [[0]], pad_id)
    batch.n_tokens = 0  # padding: not a training token (tokens/s and train_tokens count real ones)
    return batch


def run_loop(loop: Loop, state: LoopState) -> LoopState:
    """Optimizer steps from ``state.step`` to ``loop.n_steps`` (or an early stop): log, validate,
    checkpoint as the recipe says."""
    cfg, data, accelerator, model = loop.cfg, loop.data, loop.accelerator, loop.model
    world, rank = accelerator.num_processes, accelerator.process_index
    from tqdm.auto import tqdm

    bar = tqdm(total=loop.n_steps, initial=state.step, disable=not loop.main, desc="train", unit="step",
               dynamic_ncols=True)
    step_delay = float(os.environ.get("TUNEFORGE_DEBUG_STEP_SLEEP", "0") or 0)
    model.train()
    # Multi-task data: (loss sum, target tokens) per task since the last log, over all processes.
    task_sums = torch.zeros(len(data.tasks), 2, dtype=torch.float64, device=accelerator.device)
    while state.step < loop.n_steps and not state.stopped_early:
        t0 = time.perf_counter()
        micro = micro_batches_for_step(state.step, data, cfg, world, loop.seed)
        batches = []
        for rows in micro:
            mine = rows[rank * cfg.batch_size : (rank + 1) * cfg.batch_size]
            batches.append(collate(data.train, [data.train_rows[r] for r in mine], data.pad_id, data.tasks)
                           if mine else _dummy_batch(data.pad_id))
        counts = torch.tensor([sum(b.n_target for b in batches), sum(b.n_tokens for b in batches)],
                              dtype=torch.float64, device=accelerator.device)
        counts = accelerator.reduce(counts, "sum")
        n_target, n_tokens = float(counts[0]), int(counts[1])
        step_loss = torch.zeros((), dtype=torch.float64, device=accelerator.device)
        for i, b in enumerate(batches):
            sync = i == len(batches) - 1
            with contextlib.nullcontext() if sync else accelerator.no_sync(model), accelerator.autocast():
                if b.task_ids is not None:
                    loss, parts = loss_sum_by_task(model, b, len(data.tasks), cfg.prompt_learning)
                    task_sums += parts.to(task_sums.device)
                else:
                    loss = loss_sum(model, b, cfg.prompt_learning)
                # DDP averages gradients over processes: scale by world so the result is the global token mean.
                accelerator.backward(loss * (world / max(n_target, 1.0)))
            step_loss += loss.detach().double()
        if cfg.max_grad_norm > 0:
            grad_norm = accelerator.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
        loop.optimizer.step()
        loop.scheduler.step()
        loop.optimizer.zero_grad(set_to_none=True)
        step_loss = float(accelerator.reduce(step_loss, "sum")) / max(n_target, 1.0)
        state.step += 1
        state.train_tokens += n_tokens
        state.train_seconds += time.perf_counter() - t0
        tok_s = state.train_tokens / max(state.train_seconds, 1e-9)
        bar.update(1)
        bar.set_postfix(loss=f"{step_loss:.4f}", tok_s=f"{tok_s:,.0f}", refresh=False)
        last = state.step == loop.n_steps
        if state.step % cfg.log_every == 0 or state.step == 1 or last:
            extra = {"grad_norm": float(grad_norm)} if cfg.max_grad_norm > 0 else {}
            loop.logger.log(state.step, "train", loss=step_loss, lr=loop.scheduler.get_last_lr()[0],
                            tokens=state.train_tokens, tokens_per_s=tok_s, **extra)
            if data.tasks:
                _log_task_losses(accelerator, loop.run, state.step, data.tasks, task_sums)
        if data.val is not None and (state.step % cfg.eval_every == 0 or last):
            _validate(loop, state, bar)
        if loop.checkpoints and state.step % cfg.save_every == 0 and not last and not state.stopped_early:
            save_checkpoint(loop, state)
        if loop.on_step is not None:
            loop.on_step(state.step, step_loss)
        if step_delay:
            time.sleep(step_delay)
    bar.close()
    return state


def _log_task_losses(accelerator, run: Run, step: int, tasks: list[str], sums: torch.Tensor) -> None:
    """Training loss per task tag since the last log (metrics.jsonl rows with ``task``), then reset."""
    total = accelerator.reduce(sums.clone(), "sum")
    if accelerator.is_main_process:
        for k, name in enumerate(tasks):
            if total[k, 1] > 0:
                run.log_metrics(step=step, split="train", task=name, loss=float(total[k, 0] / total[k, 1]),
                                tokens=int(total[k, 1]))
    sums.zero_()


def _validate(loop: Loop, state: LoopState, bar) -> None:
    accelerator = loop.accelerator
    val_loss = evaluate(loop.model, accelerator, loop.data, loop.cfg.batch_size, loop.cfg.prompt_learning)
    state.last_val_loss, state.last_val_step = val_loss, state.step
    loop.logger.log(state.step, "val", loss=val_loss)
    state.history.append({"step": state.step, "val_loss": val_loss})
    bar.write(f"step {state.step}: validation loss {val_loss:.4f}") if loop.main else None
    if state.best_val_loss is None or val_loss < state.best_val_loss:
        state.best_val_loss, state.best_step, state.bad_evals = val_loss, state.step, 0
        if loop.dist_checkpoints:  # a collective: every process sends its shards
            dist_ckpt.save_best(loop.model, loop.run.path / CHECKPOINTS, state.step, val_loss, loop.main)
        elif loop.main and loop.checkpoints:
            ckpt.save_best(accelerator.unwrap_model(loop.model), loop.run.path / CHECKPOINTS, state.step, val_loss)
    else:
        state.bad_evals += 1
        if loop.cfg.early_stopping_patience and state.bad_evals >= loop.cfg.early_stopping_patience:
            state.stopped_early = True
            log.info("early stopping at step %d: %d validations without improvement", state.step, state.bad_evals)
    if loop.on_eval is not None and loop.on_eval(state.step, val_loss):
        state.stopped_early = True


def save_checkpoint(loop: Loop, state: LoopState) -> None:
    from dataclasses import asdict

    accelerator, root = loop.accelerator, loop.run.path / CHECKPOINTS
    tmp = ckpt.tmp_folder(root, state.step)
    if loop.main:
        root.mkdir(parents=True, exist_ok=True)
        tmp.mkdir(exist_ok=True)
    accelerator.wait_for_everyone()
    if loop.dist_checkpoints:
        dist_ckpt.write_sharded(tmp, accelerator.process_index, loop.model, loop.optimizer, loop.scheduler,
                                asdict(state))
    else:
        main_model = accelerator.unwrap_model(loop.model) if loop.main else None
        ckpt.write_local(tmp, accelerator.process_index, main_model, loop.optimizer, loop.scheduler, asdict(state))
    accelerator.wait_for_everyone()
    if loop.main:
        ckpt.finalize(root, state.step, loop.cfg.keep_checkpoints)
    accelerator.wait_for_everyone()


def restore_checkpoint(loop: Loop) -> tuple[LoopState, int] | None:
    """Load the newest complete checkpoint; None when there is none yet (killed before the first one)."""
    latest = ckpt.latest_checkpoint(loop.run.path / CHECKPOINTS)
    if latest is None:
        return None
    accelerator = loop.accelerator
    if loop.dist_checkpoints:
        saved = dist_ckpt.load_sharded(latest, accelerator.process_index, loop.model, loop.optimizer, loop.scheduler)
    else:
        saved = ckpt.load_local(latest, accelerator.process_index, accelerator.unwrap_model(loop.model),
                                loop.optimizer, loop.scheduler)
    state = LoopState(**saved)
    return state, state.step


def set_seed(seed: int) -> None:
    seed_everything(seed)
