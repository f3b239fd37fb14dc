"""One forward pass and its summed token loss, shared by training and validation (and, for multi-task
data, the same loss split by task tag).

Only positions whose next token carries loss reach the LM head: on completion-only data most tokens are
prompt, and the head (vocabulary x hidden) is the costliest matmul of a small model. Where the model
allows it (``chunked_loss.chunkable``) the decoder body runs alone and the head and cross-entropy run
over chunks of those positions, so ``[positions x vocab]`` logits never exist whole; otherwise the
model's own forward computes the kept positions' logits (``logits_to_keep``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from tuneforge.data.chat import IGNORE_INDEX
from tuneforge.models import varlen_attention
from tuneforge.train.chunked_loss import chunkable, hidden_states, lm_cross_entropy
from tuneforge.train.packing import Batch


def _inputs(model: torch.nn.Module, batch: Batch, prompt_learning: bool) -> tuple[dict, torch.Tensor]:
    device = next(p.device for p in model.parameters())
    kwargs: dict = {"input_ids": batch.input_ids.to(device, non_blocking=True), "use_cache": False}
    if prompt_learning:
        # PEFT prepends virtual tokens and ignores position ids: one example per row, with a padding mask.
        kwargs["attention_mask"] = batch.attention_mask.to(device, non_blocking=True)
    else:
        # No 2D mask: the model derives a block-diagonal causal mask from the restarting position ids.
        kwargs["position_ids"] = batch.position_ids.to(device, non_blocking=True)
        if varlen_attention.in_use(model):
            # The variable-length kernel takes the examples' bounds instead: found here, on the host, once per
            # batch rather than by every layer from the ids on the device.
            bounds = varlen_attention.packed_boundaries(batch.position_ids)
            cu = bounds["cu_seq_lens_q"].to(device, non_blocking=True)  # q and k share one tensor: one copy
            kwargs.update(bounds, cu_seq_lens_q=cu, cu_seq_lens_k=cu)
    return kwargs, batch.target.to(device, non_blocking=True)


def _logits_and_target(model: torch.nn.Module, batch: Batch, prompt_learning: bool):
    """The model's own forward: logits of the positions that carry loss, their targets, which positions."""
    kwargs, target = _inputs(model, batch, prompt_learning)
    keep = None
    if not prompt_learning:
        keep = (target != IGNORE_INDEX).any(0).nonzero().squeeze(1)
        kwargs["logits_to_keep"] = keep
        target = target[:, keep]
    logits = model(**kwargs).logits
    if logits.shape[1] != target.shape[1]:  # prompt tuning returns logits for the virtual tokens too
        logits = logits[:, -target.shape[1]:]
    return logits.float().reshape(-1, logits.shape[-1]), target.reshape(-1), keep


def _chunked(lm: torch.nn.Module, batch: Batch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Decoder body, then head + loss in chunks over the target positions: (sum, token losses, mask)."""
    kwargs, target = _inputs(lm, batch, prompt_learning=False)
    hidden = hidden_states(lm, **kwargs)
    valid = target != IGNORE_INDEX
    total, losses = lm_cross_entropy(lm, hidden[valid], target[valid])
    return total, losses, valid


def loss_sum(model: torch.nn.Module, batch: Batch, prompt_learning: bool = False) -> torch.Tensor:
    """Sum of token cross-entropies over the batch's target tokens (divide by the token count yourself)."""
    lm, _ = chunkable(model, prompt_learning)
    if lm is not None:
        return _chunked(lm, batch)[0]
    logits, target, _ = _logits_and_target(model, batch, prompt_learning)
    return F.cross_entropy(logits, target, ignore_index=IGNORE_INDEX, reduction="sum")


def loss_sum_by_task(model: torch.nn.Module, batch: Batch, n_tasks: int,
                     prompt_learning: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """``loss_sum`` plus a detached [n_tasks, 2] tensor of (loss sum, target tokens) per task tag."""
    lm, _ = chunkable(model, prompt_learning)
    if lm is not None:
        total, losses, valid = _chunked(lm, batch)
        tasks = batch.task_ids.to(valid.device)[valid]
    else:
        logits, target, keep = _logits_and_target(model, batch, prompt_learning)
        losses = F.cross_entropy(logits, target, ignore_index=IGNORE_INDEX, reduction="none")
        total = losses.sum()
        tasks = batch.task_ids if keep is None else batch.task_ids[:, keep]
        tasks = torch.where(target.view(tasks.shape) != IGNORE_INDEX, tasks.to(target.device), -1).reshape(-1)
    tagged = tasks >= 0
    idx = tasks[tagged]
    sums = torch.zeros(n_tasks, dtype=torch.float64, device=losses.device)
    sums.index_add_(0, idx, losses.detach()[tagged].double())
    counts = torch.bincount(idx, minlength=n_tasks).double()
    return total, torch.stack([sums, counts], 1)
