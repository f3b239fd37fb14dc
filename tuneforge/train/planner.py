"""The memory planner: how a run splits its optimizer step so that it fits the memory it may use.

The recipe fixes the rows per optimizer step (``batch_size x grad_accum``, per process); the loss of a
step is the mean over all its target tokens (token-weighted), and the step's rows do not depend on the
split (``loop.micro_batches_for_step``), so the micro-batch size, the accumulation and gradient
checkpointing change speed and memory, not the maths. Before the first step the run estimates every
split (``memory.estimate_memory``), keeps those that fit the budget, and takes the one expected to be
fastest: without gradient checkpointing (it recomputes every block's forward, about a third more
compute) if any fits, then the largest micro-batch (fewer, larger matmuls). Only when nothing fits does
it stop, with what to change.

The planner only ever shrinks the recipe's micro-batch, never grows it: that larger micro-batches are
faster on a CPU is not measured here, and a run that grew into most of the free memory would leave
none to a second run started beside it (two tune workers, a serve next to a train).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from tuneforge.errors import UserError
from tuneforge.train.memory import GB, MemoryEstimate

# Default budget: this share of the memory free when the run starts (RAM on a CPU, device memory on a
# GPU), leaving room for what else runs and for the estimate's error.
SAFE_SHARE = 0.85
# An explicit ``train.memory_limit_gb`` is a ceiling the peak should stay under, and the estimate errs both
# ways (a training's peak measured up to ~5% above its estimate on the examples, BENCHMARKS.md "Every example
# trained under train.memory_limit_gb: 4"): the plan's estimate must leave this share of it free.
ESTIMATE_MARGIN = 0.05


@dataclass(frozen=True)
class Plan:
    batch_size: int  # rows per micro-batch (per process)
    grad_accum: int  # micro-batches per optimizer step
    gradient_checkpointing: bool
    estimate: MemoryEstimate

    def describe(self) -> str:
        ckpt = "on" if self.gradient_checkpointing else "off"
        return (f"micro-batch {self.batch_size} row(s) x {self.grad_accum} accumulation step(s), "
                f"gradient checkpointing {ckpt}")


Estimator = Callable[[int, bool], MemoryEstimate]  # (rows per micro-batch, checkpointing) -> estimate


def candidates(global_rows: int, checkpointing: bool, max_micro: int | None = None) -> list[tuple[int, bool]]:
    """Every (micro-batch rows, checkpointing) that keeps ``global_rows`` rows per step, fastest first.

    Micro-batch sizes divide the step's rows exactly, so every micro-batch but an epoch's last is full,
    and are at most ``max_micro`` (the recipe's own). Checkpointing forced on by the recipe stays on.
    """
    top = min(global_rows, max_micro or global_rows)
    sizes = sorted((d for d in range(1, top + 1) if global_rows % d == 0), reverse=True)
    modes = (True,) if checkpointing else (False, True)
    return [(size, ckpt) for ckpt in modes for size in sizes]


def choose_plan(global_rows: int, estimate: Estimator, budget: float, checkpointing: bool = False,
                method: str = "full", max_micro: int | None = None) -> Plan:
    """The fastest split of ``global_rows`` (micro-batches of at most ``max_micro`` rows) whose estimate
    fits ``budget`` bytes; UserError if none does."""
    for size, ckpt in candidates(global_rows, checkpointing, max_micro):
        est = estimate(size, ckpt)
        if est.total <= budget:
            return Plan(size, global_rows // size, ckpt, est)
    smallest = estimate(1, True)
    fixes = ["a smaller train.max_length"]
    if method in ("full", "freeze"):
        fixes.append("train.method: lora (only adapter weights get gradients and optimizer state)")
    fixes.append("a larger train.memory_limit_gb (or more free memory)")
    raise UserError(
        f"train.memory_limit_gb: no plan fits {budget / GB:.2f} GB: even 1 row per micro-batch with "
        f"gradient checkpointing needs about {smallest.describe()}; try {'; or '.join(fixes)}"
    )


def explicit_budget(limit_gb: float) -> float:
    """The bytes a plan may be estimated at under an explicit ``train.memory_limit_gb``."""
    return (1 - ESTIMATE_MARGIN) * limit_gb * GB


def default_budget(limit: float, free_now: float) -> float:
    """``SAFE_SHARE`` of what is free now (never more than the machine's or container's limit)."""
    return SAFE_SHARE * min(limit, free_now)
