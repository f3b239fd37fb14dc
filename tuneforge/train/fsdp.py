"""Sharded training with PyTorch FSDP2 (``fully_shard``): which engine a run uses, sharding the model,
and gathering whole weights back for the outputs.

Why tuneforge shards the model itself instead of leaving it to accelerate: accelerate turns FSDP on
only for accelerator devices; on CPU processes it silently wraps the model in DDP, even under
``accelerate launch --use_fsdp`` (measured with accelerate 1.16, torch 2.13). FSDP2 itself runs on
CPU processes over gloo, so ``train.distributed: fsdp`` (or ``accelerate launch --use_fsdp`` on CPUs)
shards here: every decoder block is one FSDP unit, the root (embeddings, final norm, head) another.

Engines (``engine()``): ``single`` (one process), ``ddp`` (accelerate's DDP), ``fsdp`` (this module),
``accelerate-fsdp`` (accelerate's own FSDP on GPUs; its model is an FSDP module too, so checkpoints
and weight gathering below apply to it as well) and ``deepspeed`` (no resumable checkpoints).
"""

from __future__ import annotations

import os
from typing import Any

import torch

from tuneforge.errors import UserError

SHARDED_ENGINES = ("fsdp", "accelerate-fsdp", "deepspeed")
RESUMABLE_ENGINES = ("single", "ddp", "fsdp", "accelerate-fsdp")
LAUNCH_HINT = ("launch several processes: torchrun --nproc_per_node 2 -m tuneforge.cli.main train ... "
               "(or accelerate launch --num_processes 2 -m tuneforge.cli.main train ...)")


def engine(setting: str, distributed_type: str, num_processes: int, env: dict[str, str] | None = None) -> str:
    """The engine a run uses, from ``train.distributed``, accelerate's distributed type and the launcher's env.

    ``accelerate launch --use_fsdp`` on CPUs sets ``ACCELERATE_USE_FSDP=true`` but accelerate itself falls
    back to DDP there (``MULTI_CPU``): that request is honoured here with FSDP2.
    """
    env = os.environ if env is None else env
    if distributed_type == "DEEPSPEED":
        if setting == "fsdp":
            raise UserError("train.distributed=fsdp, but accelerate was launched with DeepSpeed: use one of them")
        return "deepspeed"
    if distributed_type == "FSDP":
        return "accelerate-fsdp"
    asked = setting == "fsdp" or env.get("ACCELERATE_USE_FSDP", "false").lower() == "true"
    if num_processes <= 1:
        if setting == "fsdp":
            raise UserError(f"train.distributed=fsdp shards over processes, and this run has one: {LAUNCH_HINT}")
        return "single"
    return "fsdp" if asked else "ddp"


def block_classes(model: torch.nn.Module) -> set[str]:
    """Class names of the transformer blocks (Hugging Face's ``_no_split_modules``), under any PEFT wrapper."""
    names: set[str] = set()
    for module in model.modules():
        names.update(getattr(module, "_no_split_modules", None) or [])
    return names


def shard(model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """Shard ``model`` in place over the default process group: one FSDP unit per block, then the root.

    Every process must hold the same initial weights (same seed): each keeps its own shard of them.
    """
    from torch.distributed.fsdp import fully_shard

    if device.type != "cpu":
        model.to(device)
    blocks = block_classes(model)
    units = [m for m in model.modules() if type(m).__name__ in blocks]
    if not units:
        raise UserError(f"train.distributed=fsdp: no transformer blocks found in {type(model).__name__} "
                        "(it lists no _no_split_modules); use DDP (train.distributed=auto)")
    for unit in units:
        fully_shard(unit)
    fully_shard(model)
    return model


def full_state(model: torch.nn.Module, trainable_only: bool) -> dict[str, torch.Tensor]:
    """Whole (unsharded) tensors on the CPU of the main process (empty dict elsewhere). A collective:
    every process must call it. ``trainable_only`` leaves frozen weights out (what checkpoints keep)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    options = StateDictOptions(full_state_dict=True, cpu_offload=True, ignore_frozen_params=trainable_only)
    tensors = get_model_state_dict(model, options=options)
    # Gathered copies no longer share storage, so save_pretrained would keep both names of a tied weight
    # (e.g. lm_head and embed_tokens): keep the first, as an unsharded model's output does.
    return {k: v for k, v in tensors.items() if k not in tied_duplicates(model)}


def tied_duplicates(model: torch.nn.Module) -> set[str]:
    """Names of parameters that are another name's parameter (tied weights), all but the first name."""
    seen: set[int] = set()
    duplicates = set()
    for name, param in model.named_parameters(remove_duplicate=False):
        if id(param) in seen:
            duplicates.add(name)
        seen.add(id(param))
    return duplicates


def load_full_state(model: torch.nn.Module, tensors: dict[str, Any] | None) -> None:
    """Load whole tensors (read by the main process only; None elsewhere) into the sharded model. A collective."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

    options = StateDictOptions(full_state_dict=True, broadcast_from_rank0=True, strict=False)
    set_model_state_dict(model, tensors or {}, options=options)
