"""Helpers shared by the strategies (stages, tune, multi-task): child run folders inside a run."""

from __future__ import annotations

import datetime as _dt
import json
from pathlib import Path
from typing import Any

from tuneforge import atomic
from tuneforge.config.loader import dump_recipe
from tuneforge.config.recipe import Recipe
from tuneforge.runs import Run


def child_run(parent: Run, recipe: Recipe, *parts: str) -> Run:
    """A run folder inside ``parent`` (a stage or a trial) with its own recipe, manifest and metrics.

    It shares the parent's log file (records go through the same ``tuneforge`` logger) and points back
    to the parent in its manifest, so one top-level run holds the whole strategy.
    """
    path = parent.path.joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    (path / "logs").mkdir(exist_ok=True)
    atomic.write_text(path / "recipe.yaml", dump_recipe(recipe))
    manifest: dict[str, Any] = {
        k: v for k, v in parent.manifest.items() if k in ("argv", "versions", "git_commit", "platform")
    }
    manifest.update(
        command=parent.manifest.get("command"),
        parent=str(parent.path),
        created=_dt.datetime.now().isoformat(timespec="seconds"),
        seed=recipe.run.seed,
        inputs={},
    )
    child = Run(path=path, recipe=recipe, manifest=manifest)
    child.save_manifest()
    return child


def write_json(path: Path, payload: Any) -> Path:
    return atomic.write_text(path, json.dumps(payload, indent=2, default=str))
