"""Recipe sections for training strategies: ``mixture`` (multi-task), ``stages`` (sequential) and ``tune``.

A multi-task recipe lists tasks, each with its own ``data`` section, and says how to mix them::

    mixture:
      strategy: temperature      # proportional | fixed | temperature
      temperature: 2.0
      cap: 2000
      tasks:
        - {name: sentiment, data: {path: rotten-tomatoes, template: sentiment}}
        - {name: rating, data: {path: drug-reviews, template: rating}}

A sequential recipe lists stages; each starts from the previous stage's result::

    stages:
      - {name: general, data: {...}, train: {epochs: 1}}
      - {name: medical, data: {...}, train: {learning_rate: 1e-4}, start_from: merged, replay: 0.1}

A search declares its space over ``train`` fields (dotted below ``train``)::

    tune:
      n_trials: 20
      space:
        learning_rate: {low: 1e-5, high: 1e-3, log: true}
        lora.r: {choices: [8, 16, 32]}
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from tuneforge.config.base import Section, check_folder_name, check_unique
from tuneforge.config.data import DataConfig
from tuneforge.config.train import TrainConfig

# The ``train`` fields a search may vary; dotted names reach nested sections (lora.r).
TUNABLE = (
    "learning_rate", "weight_decay", "epochs", "max_steps", "batch_size", "grad_accum", "warmup_ratio",
    "scheduler", "method", "lora.r", "lora.alpha", "lora.dropout", "lora.use_dora", "lora.use_rslora",
)


class TaskConfig(Section):
    """One task of a multi-task mixture: its data and (for strategy fixed) its weight."""

    name: str = Field(..., description="Task tag: carried in every example's meta.task and in reports.")
    data: DataConfig = Field(..., description="How to prepare this task's data (same fields as the data section).")
    weight: float | None = Field(
        None, gt=0, description="Mixing weight for strategy fixed (relative; need not sum to 1)."
    )

    _name = field_validator("name")(check_folder_name)  # task names become folder names and metric keys


class MixtureConfig(Section):
    """Multi-task training: several tasks in one shuffled training set, scored per task."""

    tasks: list[TaskConfig] = Field(..., min_length=1, description="The tasks to mix (at least one).")
    strategy: Literal["proportional", "fixed", "temperature"] = Field(
        "temperature",
        description="proportional: by dataset size; fixed: by each task's weight; temperature: size^(1/T), "
        "which lifts small tasks (T=1 is proportional, large T approaches uniform).",
    )
    temperature: float = Field(2.0, ge=1.0, description="T for strategy temperature.")
    cap: int | None = Field(
        None, ge=1, description="Count at most this many examples of a task when computing rates (T5-style cap)."
    )
    total: int | None = Field(
        None, ge=1, description="Training examples in the mixture. Default: the sum of (capped) task sizes. "
        "A task whose share exceeds its size is repeated (upsampled).",
    )
    max_repeats: float = Field(
        4.0, ge=1.0, description="Repeat a small task at most this many times; its surplus goes to the others."
    )

    @model_validator(mode="after")
    def _check(self) -> MixtureConfig:
        check_unique([t.name for t in self.tasks], "task")
        if self.strategy == "fixed":
            missing = [t.name for t in self.tasks if t.weight is None]
            if missing:
                raise ValueError(f"strategy fixed needs a weight on every task; missing on: {', '.join(missing)}")
        return self


class StageConfig(Section):
    """One stage of sequential fine-tuning."""

    name: str = Field(..., description="Stage name; also the task tag of its data in reports.")
    data: DataConfig = Field(..., description="This stage's data (same fields as the data section).")
    train: dict[str, Any] = Field(
        default_factory=dict,
        description="Overrides of the recipe's train section for this stage only (e.g. {learning_rate: 1e-4}).",
    )
    start_from: Literal["merged", "adapter"] = Field(
        "merged",
        description="merged: merge the previous stage's adapter into the weights and train a fresh adapter; "
        "adapter: keep training the previous stage's adapter. Ignored for the first stage.",
    )
    replay: float = Field(
        0.0, ge=0.0, lt=1.0,
        description="Share of this stage's training set drawn from earlier stages' training data (curbs forgetting).",
    )

    _name = field_validator("name")(check_folder_name)  # stages/<k>-<name>/ holds the stage's run

    @field_validator("train")
    @classmethod
    def _valid_train(cls, v: dict[str, Any]) -> dict[str, Any]:
        # Validate the overrides alone (every train field has a default), so a typo is caught at load time.
        TrainConfig.model_validate(v)
        return v


class ParamSpace(Section):
    """The range of one searched hyperparameter: low/high (int or float, optionally log) or choices."""

    low: float | None = Field(None, description="Lower bound (inclusive).")
    high: float | None = Field(None, description="Upper bound (inclusive).")
    log: bool = Field(False, description="Sample on a log scale (learning rates, weight decay).")
    step: float | None = Field(None, gt=0, description="Grid step within [low, high] (not with log).")
    integer: bool = Field(False, description="Sample integers (ranks, batch sizes, epochs).")
    choices: list[bool | int | float | str] | None = Field(None, min_length=1, description="Pick one of these values.")

    @model_validator(mode="after")
    def _check(self) -> ParamSpace:
        if self.choices is not None:
            if self.low is not None or self.high is not None:
                raise ValueError("give either choices or low/high, not both")
            return self
        if self.low is None or self.high is None:
            raise ValueError("give low and high (or choices)")
        if self.low > self.high:
            raise ValueError(f"low ({self.low}) is above high ({self.high})")
        if self.log and self.low <= 0:
            raise ValueError("log scale needs low > 0")
        if self.log and self.step is not None:
            raise ValueError("step cannot be combined with log")
        return self


class TuneConfig(Section):
    """Hyperparameter search with Optuna (tuneforge tune): each trial trains and is scored on validation loss."""

    space: dict[str, ParamSpace] = Field(
        ..., min_length=1, description=f"Searched train fields and their ranges; allowed: {', '.join(TUNABLE)}."
    )
    n_trials: int = Field(10, ge=1, description="Trials this worker runs (several workers may share one study).")
    max_total_trials: int | None = Field(
        None, ge=1, description="Stop every worker once the study holds this many finished trials."
    )
    study_name: str = Field("tuneforge", min_length=1, description="Study name inside the storage.")
    storage: str | None = Field(
        None, description="Optuna storage URL shared by all workers (sqlite:///study.db, postgresql://...). "
        "Default: sqlite:///<run.output_dir>/<study_name>.db. A password in it is shown as *** in run "
        "folders and logs; better keep it out of the recipe with storage_env.",
    )
    storage_env: str | None = Field(
        None, min_length=1, description="Name of an environment variable holding the storage URL (e.g. "
        "OPTUNA_STORAGE), so a database password stays out of recipes, argv and run folders. Not with storage.",
    )
    sampler: Literal["tpe", "random"] = Field("tpe", description="tpe: Bayesian (default); random: uniform.")
    pruner: Literal["median", "hyperband", "none"] = Field(
        "median", description="Stop unpromising trials early on their validation loss."
    )
    startup_trials: int = Field(
        3, ge=0, description="Trials that run to the end before pruning and TPE start to act."
    )
    max_steps_per_trial: int | None = Field(
        None, ge=1, description="Cap every trial's optimizer steps (a short search, then one full run of the best)."
    )
    timeout_s: float | None = Field(None, gt=0, description="Stop starting new trials after this many seconds.")
    heartbeat_interval: int | None = Field(
        60, ge=1, description="Seconds between a running trial's heartbeats in the storage. A trial whose worker "
        "died (killed, machine lost) is marked failed, not left running, by the next worker to start a trial once "
        "its last heartbeat is grace_period old. None: off.",
    )
    grace_period: int | None = Field(
        None, ge=1, description="Seconds without a heartbeat before a running trial counts as dead "
        "(default: 2 x heartbeat_interval).",
    )
    retry_failed: int = Field(
        1, ge=0, description="Times a trial failed by a dead worker is run again with the same parameters.",
    )

    @model_validator(mode="after")
    def _one_storage(self) -> TuneConfig:
        if self.storage and self.storage_env:
            raise ValueError("give storage or storage_env, not both")
        return self

    @field_validator("space")
    @classmethod
    def _known(cls, v: dict[str, ParamSpace]) -> dict[str, ParamSpace]:
        unknown = [k for k in v if k not in TUNABLE]
        if unknown:
            raise ValueError(f"cannot search {', '.join(unknown)}; searchable: {', '.join(TUNABLE)}")
        return v
