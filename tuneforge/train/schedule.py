"""Optimizer and learning-rate schedule: AdamW (no decay on biases and norms), linear warmup, then
cosine, linear or constant."""

from __future__ import annotations

import math

import torch

from tuneforge.config.train import TrainConfig


def make_optimizer(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.AdamW:
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        # Biases, norms and 1-D scales (IA3 vectors, DoRA magnitudes) are not decayed toward zero.
        (no_decay if p.ndim < 2 or "norm" in name.lower() else decay).append(p)
    groups = [g for g in ({"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}) if g["params"]]
    return torch.optim.AdamW(groups, lr=cfg.learning_rate, betas=tuple(cfg.adam_betas), **adamw_kernel(decay + no_decay))


FUSED_DEVICES = frozenset({"cpu", "cuda"})


def adamw_kernel(params: list[torch.Tensor]) -> dict[str, bool]:
    """``fused`` where every parameter is a dense float tensor on a CPU or CUDA device, else ``foreach``.

    Both give AdamW's maths (to float rounding); the fused kernel updates each tensor in one pass
    instead of a dozen passes over all of them (measured in ``bench.profile_train --ab``: ~9% of a
    LoRA step's CPU time on this CPU). Other devices, sparse or integer tensors keep foreach.
    """
    ok = all(p.device.type in FUSED_DEVICES and p.dtype.is_floating_point and not p.is_sparse for p in params)
    return {"fused": True} if ok and params else {"foreach": True}


def lr_factor(step: int, total: int, warmup: int, kind: str) -> float:
    """Multiplier of the peak learning rate at optimizer step ``step`` (0-based)."""
    if warmup and step < warmup:
        return (step + 1) / warmup
    if kind == "constant":
        return 1.0
    progress = (step - warmup) / max(1, total - warmup)
    progress = min(max(progress, 0.0), 1.0)
    if kind == "linear":
        return 1.0 - progress
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def make_scheduler(optimizer: torch.optim.Optimizer, cfg: TrainConfig, total_steps: int):
    warmup = math.ceil(cfg.warmup_ratio * total_steps)

    def factor(step: int) -> float:
        return lr_factor(step, total_steps, warmup, cfg.scheduler)

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
