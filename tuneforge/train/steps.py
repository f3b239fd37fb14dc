"""One forward pass and its summed token loss, shared by training and validation (and, for multi-task
data, the same loss split by task tag).

Only positions whose next token carries loss reach the LM head (``logits_to_keep``): on completion-only
data most tokens are prompt, and the head (vocabulary x hidden) is the costliest matmul of a small model.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from tuneforge.data.chat import IGNORE_INDEX
from tuneforge.train.packing import Batch


def _logits_and_target(model: torch.nn.Module, batch: Batch, prompt_learning: bool):
    """The logits of the positions that carry loss, their targets, and which positions those are."""
    device = next(p.device for p in model.parameters())
    input_ids = batch.input_ids.to(device, non_blocking=True)
    target = batch.target.to(device, non_blocking=True)
    kwargs: dict = {"input_ids": input_ids, "use_cache": False}
    keep = None
    if prompt_learning:
        # PEFT prepends virtual tokens and ignores position ids: one example per row, with a padding mask.
        kwargs["attention_mask"] = batch.attention_mask.to(device, non_blocking=True)
    else:
        # No 2D mask: the model derives a block-diagonal causal mask from the restarting position ids.
        kwargs["position_ids"] = batch.position_ids.to(device, non_blocking=True)
        keep = (target != IGNORE_INDEX).any(0).nonzero().squeeze(1)
        kwargs["logits_to_keep"] = keep
        target = target[:, keep]
    logits = model(**kwargs).logits
    if logits.shape[1] != target.shape[1]:  # prompt tuning returns logits for the virtual tokens too
        logits = logits[:, -target.shape[1]:]
    return logits.float().reshape(-1, logits.shape[-1]), target.reshape(-1), keep


def loss_sum(model: torch.nn.Module, batch: Batch, prompt_learning: bool = False) -> torch.Tensor:
    """Sum of token cross-entropies over the batch's target tokens (divide by the token count yourself)."""
    logits, target, _ = _logits_and_target(model, batch, prompt_learning)
    return F.cross_entropy(logits, target, ignore_index=IGNORE_INDEX, reduction="sum")


def loss_sum_by_task(model: torch.nn.Module, batch: Batch, n_tasks: int,
                     prompt_learning: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """``loss_sum`` plus a detached [n_tasks, 2] tensor of (loss sum, target tokens) per task tag."""
    logits, target, keep = _logits_and_target(model, batch, prompt_learning)
    losses = F.cross_entropy(logits, target, ignore_index=IGNORE_INDEX, reduction="none")
    tasks = batch.task_ids if keep is None else batch.task_ids[:, keep]
    tasks = tasks.reshape(-1).to(losses.device)
    valid = (target != IGNORE_INDEX) & (tasks >= 0)
    idx = tasks[valid]
    sums = torch.zeros(n_tasks, dtype=torch.float64, device=losses.device)
    sums.index_add_(0, idx, losses.detach()[valid].double())
    counts = torch.bincount(idx, minlength=n_tasks).double()
    return losses.sum(), torch.stack([sums, counts], 1)
