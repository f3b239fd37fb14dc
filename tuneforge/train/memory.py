"""Estimate the memory a training run needs, before it starts, and stop runs that cannot fit.

The estimate adds weights, gradients and AdamW state of the trainable weights, activations kept for
backward (per token and layer, from the model's shapes; only block inputs with gradient checkpointing),
the attention scores and probabilities (heads x length x length per row and layer: packed rows carry a
block-diagonal mask, and attention with an explicit mask may materialise the full matrix), and the
logits of the tokens that carry loss. It is an estimate (within tens of percent for decoder
LMs), good enough to say "this will not fit, change X" before minutes of loading and tokenizing.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch

from tuneforge.errors import UserError

GB = 1024**3


@dataclass
class MemoryEstimate:
    weights: float
    gradients: float
    optimizer: float
    activations: float
    logits: float

    @property
    def total(self) -> float:
        return self.weights + self.gradients + self.optimizer + self.activations + self.logits

    def describe(self) -> str:
        parts = ", ".join(f"{k} {v / GB:.2f}" for k, v in vars(self).items())
        return f"{self.total / GB:.2f} GB ({parts} GB)"


def estimate_memory(model: torch.nn.Module, tokens_per_micro_batch: int, gradient_checkpointing: bool,
                    act_bytes: int = 4, logit_tokens: int | None = None, seq_len: int | None = None) -> MemoryEstimate:
    """``logit_tokens``: positions that reach the LM head per micro-batch (default: every token);
    ``seq_len``: the longest row, for the attention matrices (left out when not given)."""
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    trainable = [p for p in model.parameters() if p.requires_grad]
    grads = sum(p.numel() * p.element_size() for p in trainable)
    optim = sum(2 * p.numel() * 4 for p in trainable)  # AdamW: two fp32 moments
    cfg = getattr(model, "config", None)
    base_cfg = getattr(getattr(model, "base_model", None), "config", cfg) or cfg
    hidden = getattr(base_cfg, "hidden_size", 1024)
    inter = getattr(base_cfg, "intermediate_size", 4 * hidden)
    layers = getattr(base_cfg, "num_hidden_layers", 12)
    vocab = getattr(base_cfg, "vocab_size", 32000)
    heads = getattr(base_cfg, "num_attention_heads", max(1, hidden // 64))
    # Per token and layer: norms, q/k/v/o inputs and outputs, attention output, MLP gate/up/act/down;
    # plus scores and probabilities of attention (2 x heads x seq_len per token). Without the attention
    # term a LoRA run of 8 rows x 512 tokens on SmolLM2-135M was estimated at 6.8 GB and peaked at 14.5 GB.
    per_token_layer = (10 * hidden + 4 * inter) * act_bytes + (2 * heads * seq_len * act_bytes if seq_len else 0)
    if gradient_checkpointing:
        activations = tokens_per_micro_batch * (layers * hidden * act_bytes + per_token_layer)
    else:
        activations = tokens_per_micro_batch * layers * per_token_layer
    # Logits, their softmax and gradient, in fp32, for the positions that carry loss.
    logits = (tokens_per_micro_batch if logit_tokens is None else logit_tokens) * vocab * 4 * 3
    return MemoryEstimate(weights, grads, optim, activations, logits)


def _meminfo(key: str) -> float | None:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return float(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _cgroup_limit() -> float | None:
    try:
        raw = Path("/sys/fs/cgroup/memory.max").read_text().strip()
    except OSError:
        return None
    return None if raw == "max" else float(raw)


def memory_budget(device: torch.device) -> tuple[float, float]:
    """(limit, free now) in bytes.

    GPU: both are the free device memory (other processes rarely give it back). CPU: the limit is the
    machine's (or container's) memory, what a run can never exceed; free now is MemAvailable, which
    moves with other processes, so exceeding it only earns a warning.
    """
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return float(free), float(free)
    total = _meminfo("MemTotal") or float(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    limit = min(total, _cgroup_limit() or total)
    free = _meminfo("MemAvailable") or limit
    return limit, min(free, limit)


def check_fits(est: MemoryEstimate, available: float, method: str, batch_size: int, gradient_checkpointing: bool,
               where: str) -> None:
    """Raise a UserError with the estimate and what to change when the run would not fit."""
    if est.total <= available:
        return
    fixes = []
    if batch_size > 1:
        fixes.append(f"a smaller train.batch_size (now {batch_size}) with more train.grad_accum")
    if method in ("full", "freeze"):
        fixes.append("train.method: lora (only adapter weights get gradients and optimizer state)")
    if not gradient_checkpointing:
        fixes.append("train.gradient_checkpointing: true")
    fixes.append("a smaller train.max_length")
    raise UserError(
        f"this run needs about {est.describe()} but {available / GB:.2f} GB is available on {where}; "
        f"try {'; or '.join(fixes)}"
    )
