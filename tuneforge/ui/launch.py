"""Start, stop and resume training runs from the UI, each as its own process.

A launched run is exactly ``tuneforge train RECIPE --name NAME --set run.output_dir=RUNS`` (the CLI, in
a new session: it survives the browser closing and the UI stopping). The UI keeps three files per
launch in ``RUNS/.ui/``: ``NAME.yaml`` (the recipe as pasted), ``NAME.log`` (the process's output) and
``NAME.json`` (pid, command line, start time, and the stop request, which is how a stopped run shows
"killed" rather than "failed").

Stop sends SIGINT to the run's process group: the trainer ends as on Ctrl-C, keeping the checkpoints it
saved every ``train.save_every`` steps; Resume runs ``tuneforge train RUN/recipe.yaml --resume``, which
continues from the newest complete checkpoint (the CLI's own resume).

Validation is the CLI's: :func:`tuneforge.config.loader.load_recipe` on the saved text, so the UI shows
the same ``file:line: field: message`` lines, every problem at once.
"""

from __future__ import annotations

import datetime as _dt
import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

from tuneforge import atomic
from tuneforge.config.loader import load_recipe
from tuneforge.config.recipe import Recipe
from tuneforge.errors import UserError
from tuneforge.interrupt import TAKE_SIGINT_ENV
from tuneforge.runs import RECIPE
from tuneforge.ui.catalog import UI_DIR, lock_holder, pid_alive, run_path, status_of, ui_record

SHOWN_NAME = "recipe.yaml"  # what messages call the pasted text (its file in .ui/ is an implementation detail)


def validate(runs_dir: Path, text: str) -> tuple[Recipe | None, list[str]]:
    """The recipe in ``text`` and no problems, or None and every problem as ``recipe.yaml:LINE: field: ...``."""
    folder = runs_dir / UI_DIR
    folder.mkdir(parents=True, exist_ok=True)
    draft = folder / f"draft-{uuid.uuid4().hex}.yaml"  # one per check: two tabs validating never mix
    atomic.write_text(draft, text)
    try:
        return load_recipe(draft), []
    except UserError as err:
        lines = err.problems or [str(err.args[0])]
        return None, [line.replace(str(draft), SHOWN_NAME) for line in lines]
    finally:
        draft.unlink(missing_ok=True)


def _free_name(runs_dir: Path, wanted: str | None) -> str:
    stem = wanted or f"ui-{_dt.datetime.now().strftime('%Y%m%d-%H%M%S')}"
    name, i = stem, 2
    while (runs_dir / name).exists() or (runs_dir / UI_DIR / f"{name}.json").exists():
        name, i = f"{stem}-{i}", i + 1
    return name


def start_process(argv: list[str], log: Path) -> subprocess.Popen:
    """``argv`` in a session of its own (it outlives the browser and the UI), its output appended to ``log``."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        # TAKE_SIGINT_ENV: Stop's SIGINT works even where this UI inherited an ignored SIGINT (`nohup ... &`)
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True,
                                env={**os.environ, "PYTHONUNBUFFERED": "1", TAKE_SIGINT_ENV: "1"})
    _CHILDREN.append(proc)
    return proc


def _spawn(runs_dir: Path, name: str, argv: list[str], record: dict[str, Any]) -> dict[str, Any]:
    ui = runs_dir / UI_DIR
    proc = start_process(argv, ui / f"{name}.log")
    record.update(pid=proc.pid, argv=argv, started=_dt.datetime.now().isoformat(timespec="seconds"),
                  stopped=None)
    atomic.write_json(ui / f"{name}.json", record)
    return record


# Popen objects of launched runs: polled so that finished children are reaped (no zombies linger).
_CHILDREN: list[subprocess.Popen] = []


def reap() -> None:
    for proc in list(_CHILDREN):
        if proc.poll() is not None:
            _CHILDREN.remove(proc)


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "tuneforge.cli.main", *args]


def launch(runs_dir: Path, text: str) -> tuple[str | None, list[str]]:
    """Validate ``text`` and start it as a training run; (run name, []) or (None, problems)."""
    recipe, problems = validate(runs_dir, text)
    if recipe is None:
        return None, problems
    name = _free_name(runs_dir, recipe.run.name)
    saved = runs_dir / UI_DIR / f"{name}.yaml"
    atomic.write_text(saved, text)
    argv = cli("train", str(saved), "--name", name, "--set", f"run.output_dir={runs_dir.resolve()}")
    _spawn(runs_dir, name, argv, {"command": "train"})
    return name, []


def stop(runs_dir: Path, name: str) -> bool:
    """Ask run ``name`` to stop (SIGINT to its process group, like Ctrl-C); False if it is not running."""
    folder = run_path(runs_dir, name)
    record = ui_record(runs_dir, name)
    pid = lock_holder(folder) if folder.is_dir() else None
    pid = pid or (int(record["pid"]) if record.get("pid") and pid_alive(int(record["pid"])) else None)
    if pid is None:
        return False
    record["stopped"] = _dt.datetime.now().isoformat(timespec="seconds")
    atomic.write_json(runs_dir / UI_DIR / f"{name}.json", record)
    try:
        os.killpg(os.getpgid(pid), signal.SIGINT)
    except ProcessLookupError:
        return False
    return True


def resume(runs_dir: Path, name: str) -> None:
    """Continue a stopped or crashed run from its newest complete checkpoint (``train --resume``)."""
    folder = run_path(runs_dir, name)
    if not (folder / RECIPE).is_file():
        raise UserError(f"run {name!r}: no recipe.yaml yet (it stopped before its folder was written); launch it again")
    status = status_of(folder, ui_record(runs_dir, name))
    if status == "running":
        raise UserError(f"run {name!r} is still running")
    argv = cli("train", str(folder / RECIPE), "--name", name, "--resume",
                "--set", f"run.output_dir={runs_dir.resolve()}")
    _spawn(runs_dir, name, argv, {**ui_record(runs_dir, name), "command": "train", "resumed": True})
