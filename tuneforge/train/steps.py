"""One forward pass and its summed token loss, shared by training and validation.

Only positions whose next token carries loss reach the LM head (``logits_to_keep``): on completion-only
data most tokens are prompt, and the head (vocabulary x hidden) is the costliest matmul of a small model.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from tuneforge.data.chat import IGNORE_INDEX
from tuneforge.train.packing import Batch


def loss_sum(model: torch.nn.Module, batch: Batch, prompt_learning: bool = False) -> torch.Tensor:
    """Sum of token cross-entropies over the batch's target tokens (divide by the token count yourself)."""
    device = next(p.device for p in model.parameters())
    input_ids = batch.input_ids.to(device, non_blocking=True)
    target = batch.target.to(device, non_blocking=True)
    kwargs: dict = {"input_ids": input_ids, "use_cache": False}
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
    return F.cross_entropy(
        logits.float().reshape(-1, logits.shape[-1]), target.reshape(-1), ignore_index=IGNORE_INDEX, reduction="sum"
    )
