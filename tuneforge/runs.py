"""Run folders: everything needed to reproduce or compare a run lives in ``runs/<name>/``.

Layout (the names below are this module's constants; nothing else spells them out)::

    runs/<name>/
      recipe.yaml        RECIPE        the fully resolved recipe (defaults filled in, overrides applied)
      manifest.json      MANIFEST      command, seed, hashes of every input file, library versions, commit
      logs/run.log       LOGS          the run's log
      metrics.jsonl      METRICS       one JSON object per line: {"step": ..., "split": ..., <metric>: value}
      data/              DATA          prepared splits: train.jsonl, val.jsonl, test.jsonl
      checkpoints/       CHECKPOINTS   the last K checkpoints and the best weights
      adapter/ | model/  ADAPTER/MODEL the tuned weights: a PEFT adapter, or a full model folder
      train_result.json  TRAIN_RESULT  what training reported
      eval/              EVAL          results.json, predictions-<system>.jsonl
      report.html        REPORT        the verdict and everything behind it
      <parts>/           child runs    a strategy's stages or trials, each a run folder (Run.child)
      .lock              LOCK          held by the one process writing into the run (see :meth:`Run.hold`)

A run folder's name is one plain folder name, checked again here (not only in the recipe schema), so
no recipe, however built, writes outside ``output_dir``. Files are written atomically
(``tuneforge.atomic``). A run folder's own ``recipe.yaml`` never turns ``trust_remote_code`` on: a
folder from elsewhere must not make ``tuneforge export RUN`` run its model's Python code.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import itertools
import json
import logging
import platform
import sys
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tuneforge import atomic, locks
from tuneforge.allocator import active as active_allocator
from tuneforge.config.base import check_folder_name
from tuneforge.config.loader import dump_recipe
from tuneforge.config.recipe import Recipe
from tuneforge.errors import UserError
from tuneforge.models.cache import sha256_file
from tuneforge.provenance import git_commit, library_versions
from tuneforge.secrets import RedactingFormatter, redact

RECIPE = "recipe.yaml"
LOCK = locks.LOCK_NAME
MANIFEST = "manifest.json"
LOGS = "logs"
METRICS = "metrics.jsonl"
DATA = "data"
CHECKPOINTS = "checkpoints"
ADAPTER = "adapter"
MODEL = "model"
TRAIN_RESULT = "train_result.json"
EVAL = "eval"
REPORT = "report.html"
SPLITS = ("train", "val", "test")

def hash_inputs(paths: list[str | Path]) -> dict[str, str]:
    """Content hash of every input file (folders: every file inside, sorted)."""
    hashes: dict[str, str] = {}
    for p in paths:
        path = Path(p)
        if path.is_dir():
            for f in sorted(x for x in path.rglob("*") if x.is_file()):
                hashes[str(f)] = sha256_file(f)
        elif path.is_file():
            hashes[str(path)] = sha256_file(path)
    return hashes


@dataclass(frozen=True)
class TunedWeights:
    """Where a run's trained weights are: a PEFT adapter folder or a full model folder."""

    kind: str  # "adapter" | "model"
    path: Path

    @property
    def adapter(self) -> Path | None:
        return self.path if self.kind == ADAPTER else None

    @property
    def model(self) -> Path | None:
        return self.path if self.kind == MODEL else None


def tuned_weights_in(folder: str | Path) -> TunedWeights | None:
    """The tuned weights a training run left in ``folder`` (``adapter/`` first, then ``model/``), if any."""
    root = Path(folder)
    if (root / ADAPTER / "adapter_config.json").is_file():
        return TunedWeights(ADAPTER, root / ADAPTER)
    if (root / MODEL / "config.json").is_file():
        return TunedWeights(MODEL, root / MODEL)
    return None


@dataclass(frozen=True)
class Splits:
    """A prepared folder's split files; a split that is missing or empty is ``None``."""

    train: Path | None
    val: Path | None
    test: Path | None

    @property
    def folder(self) -> Path | None:
        return next((p.parent for p in (self.train, self.val, self.test) if p is not None), None)


def _split(path: Path) -> Path | None:
    return path if path.is_file() and path.stat().st_size else None


def splits_in(folder: str | Path) -> Splits:
    """The split files of a prepared folder (``train.jsonl``, ``val.jsonl``, ``test.jsonl``)."""
    root = Path(folder)
    return Splits(*(_split(root / f"{name}.jsonl") for name in SPLITS))


def is_prepared(folder: str | Path | None) -> bool:
    """True for a folder of prepared splits (it has a non-empty train.jsonl)."""
    return folder is not None and Path(folder).is_dir() and splits_in(folder).train is not None


# Run folders this process holds (resolved paths): a second hold from the same process gets a clear
# message instead of "in use by <our own pid>".
_HELD: set[Path] = set()


def _release(stack: contextlib.ExitStack, key: Path) -> None:
    _HELD.discard(key)
    stack.close()


@dataclass
class Run:
    """A run folder. Create with :func:`create_run`; open an existing one with :func:`open_run`.

    A run made by :func:`create_run` holds the folder's lock (one writing process per run folder) until
    :meth:`close`, the end of a ``with`` block, its garbage collection or the process's exit::

        with create_run(recipe, "train") as run:
            train(recipe, run, ...)
    """

    path: Path
    recipe: Recipe
    manifest: dict[str, Any] = field(default_factory=dict)
    _held: weakref.finalize | None = field(default=None, init=False, repr=False, compare=False)

    def hold(self) -> Run:
        """Take the run folder's lock for this process (until :meth:`close`); refuse if another holds it.

        A second ``train --resume`` (or eval writing into the run) while one runs is refused with a
        message naming the holder; the lock of a killed process is free again (the kernel drops it).
        """
        if self._held is not None:
            return self
        key = self.path.resolve()
        if key in _HELD:
            raise UserError(f"{self.path}: this process already holds the run folder; close the earlier run "
                            "first (run.close(), or `with create_run(...) as run:`)")
        stack = contextlib.ExitStack()
        stack.enter_context(locks.hold(self.path, "the run folder"))
        _HELD.add(key)
        # Released by close(), or when the Run is garbage-collected without it; whichever comes first.
        self._held = weakref.finalize(self, _release, stack, key)
        return self

    def close(self) -> None:
        """Release the run folder (files stay); closing twice, or a run never held, is harmless."""
        if self._held is not None:
            held, self._held = self._held, None
            held()  # a finalizer runs once: garbage collection will not release a later holder

    def __enter__(self) -> Run:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def name(self) -> str:
        return self.path.name

    def tuned_weights(self, required: bool = False) -> TunedWeights | None:
        """The run's trained weights (``adapter/`` or ``model/``); with ``required``, a UserError if none."""
        found = tuned_weights_in(self.path)
        if found is None and required:
            from tuneforge.errors import UserError

            raise UserError(
                f"{self.path}: no trained weights found (expected {ADAPTER}/adapter_config.json or "
                f"{MODEL}/config.json); did `tuneforge train` finish?"
            )
        return found

    def splits(self) -> Splits:
        """The splits this run works on, by one rule: the run's own prepared ``data/`` when it holds a
        train split, otherwise the recipe's ``data.path`` when that is a prepared folder."""
        own = self.path / DATA
        if is_prepared(own):
            return splits_in(own)
        data_path = self.recipe.data.path if self.recipe.data else None
        if is_prepared(data_path):
            return splits_in(data_path)
        return Splits(None, None, None)

    def child(self, recipe: Recipe, *parts: str) -> Run:
        """A run folder inside this one (a stage or a trial) with its own recipe, manifest and metrics.

        It shares this run's log file (records go through the same ``tuneforge`` logger) and points back
        to this run in its manifest, so one top-level run holds the whole strategy.
        """
        path = self.path.joinpath(*parts)
        (path / LOGS).mkdir(parents=True, exist_ok=True)
        atomic.write_text(path / RECIPE, dump_recipe(recipe))
        manifest: dict[str, Any] = {
            k: v for k, v in self.manifest.items() if k in ("argv", "versions", "git_commit", "platform")
        }
        manifest.update(
            command=self.manifest.get("command"),
            parent=str(self.path),
            created=_dt.datetime.now().isoformat(timespec="seconds"),
            seed=recipe.run.seed,
            inputs={},
        )
        child = Run(path=path, recipe=recipe, manifest=manifest)
        child.save_manifest()
        return child

    def file(self, *parts: str) -> Path:
        p = self.path.joinpath(*parts)
        p.parent.mkdir(parents=True, exist_ok=True)
        return p

    def log_metrics(self, step: int | None = None, split: str | None = None, **metrics: Any) -> None:
        row: dict[str, Any] = {"time": round(_dt.datetime.now().timestamp(), 3)}
        if step is not None:
            row["step"] = step
        if split is not None:
            row["split"] = split
        row.update(metrics)
        with open(self.path / "metrics.jsonl", "a", encoding="utf-8") as f:
            f.write(json.dumps(row) + "\n")

    def read_metrics(self) -> list[dict[str, Any]]:
        f = self.path / "metrics.jsonl"
        if not f.is_file():
            return []
        return [json.loads(line) for line in f.read_text(encoding="utf-8").splitlines() if line.strip()]

    def add_inputs(self, paths: list[str | Path]) -> None:
        """Record content hashes of more input files in the manifest."""
        self.manifest.setdefault("inputs", {}).update(hash_inputs(paths))
        self.save_manifest()

    def update_manifest(self, **values: Any) -> None:
        self.manifest.update(values)
        self.save_manifest()

    def save_manifest(self) -> None:
        # Redacted on the way out (argv may hold --storage postgresql://user:pw@...); memory keeps the original.
        atomic.write_json(self.path / "manifest.json", redact(self.manifest), sort_keys=True, default=str)


def _attach_log(path: Path) -> None:
    """Send tuneforge's log records to the run's log file (replacing an earlier run's file handler)."""
    root = logging.getLogger("tuneforge")
    for old in [h for h in root.handlers if getattr(h, "_tuneforge_run", False)]:
        root.removeHandler(old)
        old.close()
    handler = logging.FileHandler(path, encoding="utf-8")
    handler._tuneforge_run = True  # type: ignore[attr-defined]
    handler.setFormatter(RedactingFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root.setLevel(logging.INFO)
    root.addHandler(handler)


def _inside(base: Path, path: Path) -> Path:
    """``path`` if it resolves to a folder directly in ``base`` (a symlinked run folder may not lead out)."""
    if path.resolve().parent != base:
        raise UserError(f"{path}: run folder resolves to {path.resolve()}, outside run.output_dir {base}")
    return path


def _run_folder(base: Path, name: str, resume: bool) -> Path:
    """The run's folder, claimed: ``base/name`` (reused with ``resume``), else the first free ``name-N``.

    ``mkdir`` without ``exist_ok`` claims a name atomically, so two processes started together with one
    name get two folders instead of sharing one.
    """
    try:
        check_folder_name(name)
    except ValueError as exc:
        raise UserError(f"run.name {name!r}: {exc}") from None
    base.mkdir(parents=True, exist_ok=True)
    for candidate in itertools.chain([name], (f"{name}-{i}" for i in itertools.count(2))):
        path = _inside(base, base / candidate)
        if resume:
            path.mkdir(exist_ok=True)
            return path
        try:
            path.mkdir()
            return path
        except FileExistsError:
            continue
    raise AssertionError("unreachable")


def create_run(recipe: Recipe, command: str, inputs: list[str | Path] | None = None, resume: bool = False) -> Run:
    """Make ``<output_dir>/<name>/``, hold it, and write the resolved recipe, manifest and log file.

    Without an explicit name, the folder is ``<command>-<timestamp>``. An existing folder is reused only
    with ``resume=True``; otherwise a numeric suffix keeps earlier runs intact. The returned run holds the
    folder's lock: close it (or use ``with``) when the run ends; another process resuming the same folder
    meanwhile is refused.
    """
    name = recipe.run.name or f"{command}-{_dt.datetime.now().strftime('%Y%m%d-%H%M%S')}"
    base = Path(recipe.run.output_dir).resolve()
    path = _run_folder(base, name, resume)
    run = Run(path=path, recipe=recipe).hold()
    try:
        _write_run_files(run, command, inputs, resume)
    except BaseException:
        run.close()
        raise
    _attach_log(path / "logs" / "run.log")
    logging.getLogger("tuneforge").info("run %s: %s", command, path)
    return run


def _write_run_files(run: Run, command: str, inputs: list[str | Path] | None, resume: bool) -> None:
    path, recipe = run.path, run.recipe
    (path / "logs").mkdir(exist_ok=True)
    atomic.write_text(path / "recipe.yaml", dump_recipe(recipe))
    manifest: dict[str, Any] = {}
    if resume and (path / "manifest.json").is_file():
        manifest = json.loads((path / "manifest.json").read_text())
    manifest.update(
        {
            "command": command,
            "argv": sys.argv,
            "created": manifest.get("created") or _dt.datetime.now().isoformat(timespec="seconds"),
            "seed": recipe.run.seed,
            "versions": library_versions(),
            "git_commit": git_commit(),
            "platform": platform.platform(),
            "allocator": active_allocator(),  # tuneforge.allocator: TCMalloc is faster (and changes peak RSS)
        }
    )
    manifest.setdefault("inputs", {})
    if inputs:
        manifest["inputs"].update(hash_inputs(inputs))
    run.manifest = manifest
    run.save_manifest()


def load_run_recipe(path: str | Path, overrides: dict[str, Any] | None = None) -> Recipe:
    """A run folder's ``recipe.yaml`` with ``overrides``; ``trust_remote_code`` only if the overrides say so.

    A run folder may come from anyone (a download, a shared drive); its recipe must not be able to make
    `tuneforge export/eval RUN` import Python files from the model folder it names.
    """
    from tuneforge.config.loader import load_recipe

    p = Path(path)
    if not (p / "recipe.yaml").is_file():
        raise UserError(f"{p}: not a run folder (no recipe.yaml)")
    overrides = dict(overrides or {})
    if "model.trust_remote_code" not in overrides:
        overrides["model.trust_remote_code"] = False
        if load_recipe(p / "recipe.yaml").model.trust_remote_code:
            print(f"note: {p / 'recipe.yaml'} sets model.trust_remote_code; ignored: a run folder's own recipe "
                  "cannot allow code execution (pass --trust-remote-code if you trust this folder)", file=sys.stderr)
    return load_recipe(p / "recipe.yaml", overrides)


def open_run(path: str | Path, overrides: dict[str, Any] | None = None) -> Run:
    """Open an existing run folder (to evaluate, compare, export or report on it); see :func:`load_run_recipe`."""
    p = Path(path)
    recipe = load_run_recipe(p, overrides)
    manifest = json.loads((p / "manifest.json").read_text()) if (p / "manifest.json").is_file() else {}
    return Run(path=p, recipe=recipe, manifest=manifest)
