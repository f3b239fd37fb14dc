"""Sharded checkpoints (FSDP) through ``torch.distributed.checkpoint``, with the same atomic folder protocol
and resume contract as ``checkpoint.py``.

A sharded checkpoint folder holds ``dcp/`` (every process writes its own shards of the trainable weights
and of the optimizer state, plus DCP's metadata), ``scheduler.pt`` and ``trainer_state.json`` (main
process), and ``rng-<rank>.*`` (every process). The folder is written as ``.tmp``, renamed and marked
``COMPLETE`` by ``checkpoint.finalize`` exactly like an unsharded one, so a process killed mid-write
resumes from the checkpoint before. Resume reshards on load, so the process count may change.

Every function here is a collective: all processes call it, in the same order.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from tuneforge.train import checkpoint as ckpt
from tuneforge.train import fsdp

DCP = "dcp"


def _options(**extra: bool):
    from torch.distributed.checkpoint.state_dict import StateDictOptions

    # Frozen weights come from the base model on every start: a LoRA checkpoint keeps the adapter only.
    return StateDictOptions(ignore_frozen_params=True, **extra)


def write_sharded(folder: Path, rank: int, model: torch.nn.Module, optimizer: Any, scheduler: Any,
                  state: dict[str, Any]) -> None:
    """Every process writes its shards of model and optimizer state and its RNG; the main one the rest."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict

    model_state, optim_state = get_state_dict(model, optimizer, options=_options())
    ckpt.save_rng(folder, rank)
    dcp.save({"model": model_state, "optim": optim_state}, checkpoint_id=str(folder / DCP))
    if rank == 0:
        ckpt.crash_point(folder.name.removesuffix(".tmp") + ":writing")  # shards written, state not yet
        torch.save(scheduler.state_dict(), folder / "scheduler.pt")
        (folder / "trainer_state.json").write_text(json.dumps(state, indent=1))


def load_sharded(folder: Path, rank: int, model: torch.nn.Module, optimizer: Any, scheduler: Any) -> dict[str, Any]:
    """Model and optimizer shards (resharded to this run's processes), scheduler, RNG; the trainer state."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

    if not (folder / DCP).is_dir():
        raise RuntimeError(f"{folder}: not a sharded checkpoint (no {DCP}/); it was written by a DDP or "
                           "single-process run: resume it the way it was started")
    model_state, optim_state = get_state_dict(model, optimizer, options=_options())
    # Loads in place into this run's shards; a key missing from the checkpoint is an error here.
    dcp.load({"model": model_state, "optim": optim_state}, checkpoint_id=str(folder / DCP))
    set_state_dict(model, optimizer, model_state_dict=model_state, optim_state_dict=optim_state,
                   options=_options(strict=False))
    scheduler.load_state_dict(torch.load(folder / "scheduler.pt", weights_only=True))
    ckpt.load_rng(folder, rank)
    return json.loads((folder / "trainer_state.json").read_text())


def save_best(model: torch.nn.Module, root: Path, step: int, val_loss: float, main: bool) -> None:
    """The best trainable weights so far as one whole ``best.safetensors`` (gathered to the main process)."""
    from safetensors.torch import save_file

    from tuneforge import atomic

    tensors = fsdp.full_state(model, trainable_only=True)
    if main:
        root.mkdir(parents=True, exist_ok=True)
        with atomic.replace_file(root / "best.safetensors") as tmp:
            save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp))
        atomic.write_json(root / "best.json", {"step": step, "val_loss": val_loss})


def load_best(model: torch.nn.Module, path: Path, main: bool) -> None:
    """Load ``best.safetensors`` (read by the main process, broadcast as shards) into the sharded model."""
    from safetensors.torch import load_file

    fsdp.load_full_state(model, load_file(str(path)) if main else None)
