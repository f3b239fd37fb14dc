"""Hyperparameter search with Optuna: ``tuneforge tune RECIPE``.

Each trial samples the ``tune.space`` of the recipe into a copy of its ``train`` section, trains in its
own folder (``<run>/trials/trial-NNN/``) and is scored on its best validation loss. Validation losses are
reported to Optuna as training goes, so the pruner stops trials that fall behind the others at the
same step. The study lives in a database (SQLite file by default; any URL Optuna accepts, such as
PostgreSQL), so several workers, on one machine or many, pointed at the same storage and study name,
share trials: TPE in each worker learns from every worker's results. When a worker finishes it writes
the best trial of the whole study as a ready recipe (``best.yaml``) and a report with the search's plots.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import zlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from tuneforge import atomic
from tuneforge.config.loader import derive_recipe, dump_recipe
from tuneforge.config.recipe import Recipe
from tuneforge.config.strategies import ParamSpace, TuneConfig
from tuneforge.errors import UserError
from tuneforge.secrets import redact_text, redact_url
from tuneforge.strategies.tune_report import TuneResult, write_report

if TYPE_CHECKING:
    import optuna

    from tuneforge.runs import Run

log = logging.getLogger(__name__)


def worker_id() -> str:
    """Names this worker in the study (trial user attribute ``worker``): host, process, and the thread
    when a worker runs beside others in one process."""
    me = f"{socket.gethostname()}:{os.getpid()}"
    if threading.current_thread() is not threading.main_thread():
        me += f":{threading.get_ident()}"
    return me


def suggest(trial: optuna.Trial, space: dict[str, ParamSpace]) -> dict[str, Any]:
    """One value per searched field, drawn from its declared range."""
    params: dict[str, Any] = {}
    for name, p in space.items():
        if p.choices is not None:
            params[name] = trial.suggest_categorical(name, list(p.choices))
        elif p.integer:
            step = int(p.step) if p.step else 1
            params[name] = trial.suggest_int(name, int(p.low), int(p.high), step=step, log=p.log)
        else:
            params[name] = trial.suggest_float(name, float(p.low), float(p.high), step=p.step, log=p.log)
    return params


def apply_params(recipe: Recipe, params: dict[str, Any], max_steps: int | None = None) -> Recipe:
    """A copy of ``recipe`` with ``params`` (dotted names below ``train``) set and validated."""
    overrides = {f"train.{dotted}": value for dotted, value in params.items()}
    if max_steps is not None:
        overrides["train.max_steps"] = min(recipe.train.max_steps or max_steps, max_steps)
    try:
        return derive_recipe(recipe, overrides)
    except ValidationError as exc:  # a sampled combination the schema rejects is a bad search space
        raise UserError(f"tune.space: sampled values {params} are not a valid train section: {exc}") from None


def best_recipe(recipe: Recipe, params: dict[str, Any]) -> Recipe:
    """The recipe to train for real with the best trial's values (no ``tune`` section, no run name)."""
    out = apply_params(recipe, params)
    out.tune = None
    out.run.name = None
    return out


def default_storage(recipe: Recipe, cfg: TuneConfig) -> str:
    """``cfg.storage``, the URL in the variable ``cfg.storage_env``, or a SQLite file next to the run
    folders (shared by workers on this machine)."""
    if cfg.storage_env:
        url = os.environ.get(cfg.storage_env, "").strip()
        if not url:
            raise UserError(f"tune.storage_env: environment variable {cfg.storage_env} is not set or empty; "
                            f"export {cfg.storage_env}=<storage URL> (sqlite:///..., postgresql://...)")
        return url
    if cfg.storage:
        return cfg.storage
    folder = Path(recipe.run.output_dir).resolve()
    folder.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{folder / (cfg.study_name + '.db')}"


def sqlalchemy_url(storage: str) -> str:
    """A PostgreSQL URL with the driver tuneforge installs: a bare ``postgresql://`` means psycopg2 to
    SQLAlchemy, while ``tuneforge[postgres]`` brings psycopg 3 (``postgresql+psycopg://``)."""
    import importlib.util

    scheme, sep, rest = storage.partition("://")
    if scheme not in ("postgresql", "postgres") or not sep:
        return storage
    if importlib.util.find_spec("psycopg2") is not None:
        return f"postgresql://{rest}"
    if importlib.util.find_spec("psycopg") is None:
        raise UserError("tune.storage: a PostgreSQL storage needs a driver: pip install 'tuneforge[postgres]'")
    return f"postgresql+psycopg://{rest}"


def _creation_race(exc: Exception) -> bool:
    """Two workers creating Optuna's tables in one database at the same instant: the loser may retry."""
    from sqlalchemy.exc import IntegrityError, ProgrammingError

    return isinstance(exc, IntegrityError | ProgrammingError) and (
        "already exists" in str(exc) or "duplicate key" in str(exc))


def _retry_callback(max_retry: int):
    """Optuna's callback that queues a dead worker's trial again (marked experimental by Optuna: quiet)."""
    import warnings

    import optuna

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.storages.RetryFailedTrialCallback(max_retry=max_retry)


def open_study(cfg: TuneConfig, storage: str, seed: int | None = None) -> optuna.Study:
    """Create the study, or join it when another worker already did.

    With ``heartbeat_interval`` every running trial beats in the storage; a worker starting a trial first
    marks trials without a recent beat as failed (their worker died) and, up to ``retry_failed`` times,
    queues their parameters again.
    """
    import warnings

    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = sqlalchemy_url(storage)
    engine_kwargs: dict[str, Any] = {}
    if storage.startswith("sqlite"):
        # Workers write one file; wait for each other's locks instead of failing at once.
        engine_kwargs = {"connect_args": {"timeout": 120}}
    beat: dict[str, Any] = {}
    if cfg.heartbeat_interval:
        beat = {"heartbeat_interval": cfg.heartbeat_interval,
                "grace_period": cfg.grace_period or 2 * cfg.heartbeat_interval,
                "failed_trial_callback": _retry_callback(cfg.retry_failed)}
    last: Exception | None = None
    for attempt in range(5):  # two workers creating the tables at the same instant may collide once
        try:
            with warnings.catch_warnings():  # heartbeats and the retry callback are "experimental" in Optuna
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                rdb = optuna.storages.RDBStorage(storage, engine_kwargs=engine_kwargs, **beat)
            break
        except Exception as exc:
            if "sqlite" not in storage and not _creation_race(exc):
                reason = redact_text(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
                raise UserError(f"tune.storage: cannot open {redact_url(storage)!r}: {reason}") from None
            last = exc
            time.sleep(0.5 * (attempt + 1))
    else:
        raise UserError(f"tune.storage: cannot open {redact_url(storage)!r}: {last}")
    if cfg.sampler == "random":
        sampler: optuna.samplers.BaseSampler = optuna.samplers.RandomSampler(seed=seed)
    else:
        sampler = optuna.samplers.TPESampler(seed=seed, n_startup_trials=cfg.startup_trials)
    if cfg.pruner == "median":
        pruner: optuna.pruners.BasePruner = optuna.pruners.MedianPruner(n_startup_trials=cfg.startup_trials)
    elif cfg.pruner == "hyperband":
        pruner = optuna.pruners.HyperbandPruner()
    else:
        pruner = optuna.pruners.NopPruner()
    return optuna.create_study(
        storage=rdb, study_name=cfg.study_name, sampler=sampler, pruner=pruner,
        direction="minimize", load_if_exists=True,
    )


def make_objective(
    recipe: Recipe, run: Run, train_file: Path, val_file: Path, model_loader=None, tokenizer=None
):
    """The function Optuna minimises: train one trial, return its best validation loss."""
    import optuna

    from tuneforge.train import train as train_fn

    cfg = recipe.tune
    assert cfg is not None
    me = worker_id()

    def objective(trial: optuna.Trial) -> float:
        params = suggest(trial, cfg.space)
        trial.set_user_attr("worker", me)
        trial_recipe = apply_params(recipe, params, cfg.max_steps_per_trial)
        trial_run = run.child(trial_recipe, "trials", f"trial-{trial.number:03d}")
        pruned = {"at": None}

        def on_eval(step: int, val_loss: float) -> bool:
            trial.report(val_loss, step)
            if trial.should_prune():
                pruned["at"] = step
                return True
            return False

        model = model_loader(trial_recipe) if model_loader else None
        result = train_fn(trial_recipe, trial_run, train_file, val_file, model=model, tokenizer=tokenizer,
                          on_eval=on_eval)
        trial.set_user_attr("run", str(trial_run.path))
        trial.set_user_attr("steps", int(result.steps))
        trial.set_user_attr("tokens_per_s", float(result.tokens_per_s or 0.0))
        run.log_metrics(step=trial.number, split="tune", best_val_loss=result.best_val_loss,
                        pruned=pruned["at"] is not None, worker=me, **params)
        if pruned["at"] is not None:
            raise optuna.TrialPruned(f"pruned at step {pruned['at']}")
        if result.best_val_loss is None:
            raise UserError("tuning needs validation data: set data.val_fraction > 0")
        return float(result.best_val_loss)

    return objective


def run_search(
    recipe: Recipe, run: Run, train_file: Path, val_file: Path, *, model_loader=None, tokenizer=None, objective=None
) -> TuneResult:
    """Run this worker's trials in the shared study, then write ``best.yaml`` and the report.

    ``objective`` replaces training (for tests of the search machinery only).
    """
    import optuna

    cfg = recipe.tune
    if cfg is None:
        raise UserError("the recipe has no tune section; add tune.space (see examples/tune.yaml)")
    storage = default_storage(recipe, cfg)
    # Workers must not draw the same "random" startup trials: seed each one differently.
    study = open_study(cfg, storage, seed=recipe.run.seed + zlib.crc32(worker_id().encode()))
    run.update_manifest(tune={"storage": redact_url(storage), "storage_env": cfg.storage_env,
                              "study": cfg.study_name, "worker": worker_id()})
    log.info("tune: study %s in %s", cfg.study_name, redact_url(storage))
    objective = objective or make_objective(recipe, run, train_file, val_file, model_loader, tokenizer)
    callbacks = []
    if cfg.max_total_trials:
        callbacks.append(optuna.study.MaxTrialsCallback(cfg.max_total_trials))
    before = len(study.trials)
    study.optimize(
        objective, n_trials=cfg.n_trials, timeout=cfg.timeout_s, callbacks=callbacks,
        catch=(RuntimeError,), show_progress_bar=cfg.n_trials > 1,
    )
    mine = [t for t in study.get_trials(deepcopy=False) if t.user_attrs.get("worker") == worker_id()]
    result = TuneResult(cfg.study_name, storage, worker_id(), len(mine), None)
    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    if complete:
        best = study.best_trial
        result.best_value = best.value
        result.best_params = dict(best.params)
        out = run.file("best.yaml")
        header = (
            f"# Best of study {cfg.study_name!r} ({len(complete)} complete trials): trial {best.number}, "
            f"best validation loss {best.value:.4f}\n# Train it: tuneforge train {out}\n"
        )
        atomic.write_text(out, header + dump_recipe(best_recipe(recipe, best.params)))
        result.best_recipe = out
    log.info("tune: %d trials in the study (%d new)", len(study.trials), len(study.trials) - before)
    result.report = write_report(study, run, result)
    return result


def run_tune(recipe: Recipe, run: Run, tokenizer: Any = None) -> TuneResult:
    """Prepare the recipe's data (or mixture) once into the run, then run this worker's share of the search."""
    from tuneforge.models import load_tokenizer
    from tuneforge.strategies.common import prepare_training_files

    if recipe.tune is None:
        raise UserError("the recipe has no tune section; add tune.space (see examples/tune.yaml)")
    tokenizer = tokenizer or load_tokenizer(recipe.model.name, recipe.model.trust_remote_code)
    files = prepare_training_files(recipe, run, tokenizer)
    if files.val is None:
        raise UserError("tuning scores trials on validation loss: set data.val_fraction > 0")
    return run_search(recipe, run, files.train, files.val, tokenizer=tokenizer)


def tune_summary(recipe: Recipe, run: Run, model: Any = None, tokenizer: Any = None) -> dict[str, Any]:
    """:func:`run_tune` in the shape of every strategy (each trial loads its own model: ``model`` is unused)."""
    from dataclasses import asdict

    return {"kind": "tune", **asdict(run_tune(recipe, run, tokenizer=tokenizer))}
