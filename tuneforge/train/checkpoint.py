"""Atomic checkpoints and exact resume.

A checkpoint is written into ``checkpoint-NNNNNN.tmp``; every file is fsynced; the folder is renamed to
``checkpoint-NNNNNN``; the ``COMPLETE`` marker is written (and fsynced) last. Only folders with the
marker are ever resumed, so a run killed while writing one resumes from the one before.

Contents: trainable weights (safetensors), optimizer and scheduler state, the trainer state (step,
best validation loss, ...) and every process's RNG states (torch, CUDA, Python, NumPy). The data
position is the step itself: batches are a pure function of (seed, epoch, step).
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
from pathlib import Path
from typing import Any

import torch

from tuneforge import atomic

MARKER = "COMPLETE"
PREFIX = "checkpoint-"
# Testing aid for crash-safety checks (bench/chaos_resume.py): the process SIGKILLs itself when it reaches
# the named point, e.g. ``checkpoint-000004:writing`` (see crash_point calls). Never set in normal use.
CRASH_ENV = "TUNEFORGE_DEBUG_CRASH_AT"


def crash_point(name: str) -> None:
    """Die here with SIGKILL (no cleanup, no flush) if ``$TUNEFORGE_DEBUG_CRASH_AT`` names this point."""
    if os.environ.get(CRASH_ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)


def checkpoint_name(step: int) -> str:
    return f"{PREFIX}{step:06d}"


def trainable_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().cpu().contiguous() for n, p in model.named_parameters() if p.requires_grad}


def save_weights(model: torch.nn.Module, path: Path) -> None:
    from safetensors.torch import save_file

    save_file(trainable_state(model), str(path))


def load_weights(model: torch.nn.Module, path: Path) -> None:
    from safetensors.torch import load_file

    saved = load_file(str(path))
    params = dict(model.named_parameters())
    missing = [n for n in saved if n not in params]
    if missing:
        raise RuntimeError(f"{path}: checkpoint has weights the model lacks: {missing[:3]}")
    with torch.no_grad():
        for name, tensor in saved.items():
            params[name].copy_(tensor.to(params[name].device, params[name].dtype))


def rng_state() -> dict[str, Any]:
    import numpy as np

    np_state = np.random.get_state()
    return {
        "python": [random.getstate()[0], list(random.getstate()[1]), random.getstate()[2]],
        "numpy": [np_state[0], np_state[1].tolist(), *np_state[2:]],
    }


def save_rng(folder: Path, rank: int) -> None:
    torch.save(
        {"torch": torch.get_rng_state(), "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []},
        folder / f"rng-{rank}.pt",
    )
    (folder / f"rng-{rank}.json").write_text(json.dumps(rng_state()))


def load_rng(folder: Path, rank: int) -> None:
    import numpy as np

    tensors = torch.load(folder / f"rng-{rank}.pt", weights_only=True)
    torch.set_rng_state(tensors["torch"])
    if tensors["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(tensors["cuda"])
    state = json.loads((folder / f"rng-{rank}.json").read_text())
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    npy = state["numpy"]
    np.random.set_state((npy[0], np.array(npy[1], dtype=np.uint32), *npy[2:]))


def tmp_folder(root: Path, step: int) -> Path:
    return root / (checkpoint_name(step) + ".tmp")


def write_local(
    folder: Path, rank: int, model: torch.nn.Module | None, optimizer: Any, scheduler: Any, state: dict[str, Any]
) -> None:
    """Files of one process: the main process (model given) writes weights, optimizer, scheduler, state."""
    folder.mkdir(parents=True, exist_ok=True)
    save_rng(folder, rank)
    if model is not None:
        save_weights(model, folder / "trainable.safetensors")
        crash_point(folder.name.removesuffix(".tmp") + ":writing")  # weights written, optimizer not yet
        torch.save(optimizer.state_dict(), folder / "optimizer.pt")
        torch.save(scheduler.state_dict(), folder / "scheduler.pt")
        (folder / "trainer_state.json").write_text(json.dumps(state, indent=1))


def finalize(root: Path, step: int, keep: int, protect: set[str] | None = None) -> Path:
    """fsync every file, rename the temporary folder into place, write the marker last, prune old ones."""
    tmp = tmp_folder(root, step)
    final = root / checkpoint_name(step)
    atomic.fsync_tree(tmp)
    if final.exists():
        shutil.rmtree(final)
    tmp.rename(final)
    atomic.fsync_dir(root)
    crash_point(final.name + ":renamed")  # in place, but no marker yet
    atomic.write_json(final / MARKER, {"step": step})
    crash_point(final.name + ":marked")  # complete, older ones not pruned yet
    prune(root, keep, protect or set())
    return final


def complete_checkpoints(root: Path) -> list[Path]:
    """Finished checkpoints, oldest first (temporary and marker-less folders are ignored)."""
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and p.name.startswith(PREFIX) and not p.name.endswith(".tmp")
             and (p / MARKER).is_file()]
    return sorted(found, key=lambda p: int(p.name[len(PREFIX):]))


def latest_checkpoint(root: Path) -> Path | None:
    found = complete_checkpoints(root)
    return found[-1] if found else None


def prune(root: Path, keep: int, protect: set[str]) -> None:
    """Keep the newest ``keep`` complete checkpoints (and any in ``protect``); drop leftovers of crashed writes."""
    complete = complete_checkpoints(root)
    for old in complete[:-keep]:
        if old.name not in protect:
            shutil.rmtree(old, ignore_errors=True)
    for p in root.iterdir():
        if p.is_dir() and p.name.startswith(PREFIX) and p not in complete and p.name not in protect:
            shutil.rmtree(p, ignore_errors=True)


def load_local(folder: Path, rank: int, model: torch.nn.Module, optimizer: Any, scheduler: Any) -> dict[str, Any]:
    load_weights(model, folder / "trainable.safetensors")
    optimizer.load_state_dict(torch.load(folder / "optimizer.pt", weights_only=True))
    scheduler.load_state_dict(torch.load(folder / "scheduler.pt", weights_only=True))
    state = json.loads((folder / "trainer_state.json").read_text())
    load_rng(folder, rank)
    return state


def save_best(model: torch.nn.Module, root: Path, step: int, val_loss: float) -> None:
    """The best weights so far, written atomically (temporary file, fsync, rename)."""
    with atomic.replace_file(root / "best.safetensors") as tmp:
        save_weights(model, tmp)
    atomic.write_json(root / "best.json", {"step": step, "val_loss": val_loss})
