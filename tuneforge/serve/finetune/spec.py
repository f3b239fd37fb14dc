"""A fine-tuning job request: checked (OpenAI's two hyperparameter forms, tuneforge's extras) and turned
into a tuneforge recipe.

OpenAI's older ``hyperparameters`` and newer ``method: {type: supervised, supervised: {hyperparameters}}``
forms both land in :class:`Hyper`. Method types tuneforge cannot run (``dpo``, ``reinforcement``, ...)
are refused, never ignored. tuneforge's own settings ride in a ``tuneforge`` object (the official
client sends it with ``extra_body``); they default to a LoRA recipe that suits small chat datasets.
"""

from __future__ import annotations

import math
import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from tuneforge.serve.errors import ApiError

Auto = Literal["auto"]
SUFFIX = re.compile(r"[A-Za-z0-9_-]{1,64}")
BASE_LR = {"lora": 2e-4, "full": 2e-5}  # learning_rate_multiplier multiplies this


class Hyper(BaseModel):
    model_config = ConfigDict(extra="forbid")
    n_epochs: Annotated[int, Field(ge=1, le=50)] | Auto = "auto"
    batch_size: Annotated[int, Field(ge=1, le=256)] | Auto = "auto"
    learning_rate_multiplier: Annotated[float, Field(gt=0, le=100)] | Auto = "auto"


class Supervised(BaseModel):
    model_config = ConfigDict(extra="forbid")
    hyperparameters: Hyper = Field(default_factory=Hyper)


class Method(BaseModel):
    model_config = ConfigDict(extra="allow")  # dpo/reinforcement bodies are refused by type, not by shape
    type: str
    supervised: Supervised | None = None


class Extras(BaseModel):
    """tuneforge's settings beyond OpenAI's: the request's ``tuneforge`` object."""

    model_config = ConfigDict(extra="forbid")
    method: Literal["lora", "full"] = Field("lora", description="lora (served at once) or full fine-tuning.")
    lora_r: int = Field(16, ge=1, le=256, description="LoRA rank.")
    max_steps: int | None = Field(None, ge=1, description="Stop after this many optimizer steps.")
    save_every: int = Field(50, ge=1, description="Checkpoint every N optimizer steps.")
    max_length: int = Field(1024, ge=16, le=32768, description="Tokens per training example.")
    evaluate: bool = Field(True, description="Evaluate on the validation file after training (verdict, report).")
    eval_examples: int | None = Field(None, ge=1, description="Evaluate on at most this many examples.")
    forgetting: bool = Field(True, description="Run the general-ability (forgetting) probes in the evaluation.")


class JobRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    model: str
    training_file: str
    validation_file: str | None = None
    suffix: str | None = None
    seed: int | None = Field(None, ge=0, le=2**31 - 1)
    metadata: dict[str, str] | None = None
    hyperparameters: Hyper | None = None
    method: Method | None = None
    integrations: list[dict[str, Any]] | None = None
    tuneforge: Extras | None = None


def check(req: JobRequest) -> Hyper:
    """The request's hyperparameters, or ApiError naming what is refused."""
    if req.suffix is not None and not SUFFIX.fullmatch(req.suffix):
        raise ApiError(400, "suffix: 1 to 64 letters, digits, '-' or '_'", "invalid_suffix", "suffix")
    if req.metadata is not None and (len(req.metadata) > 16 or any(len(k) > 64 or len(v) > 512
                                                                   for k, v in req.metadata.items())):
        raise ApiError(400, "metadata: at most 16 pairs, keys up to 64 and values up to 512 characters",
                       "invalid_metadata", "metadata")
    if req.integrations:
        raise ApiError(400, "integrations are not supported by tuneforge (its run folder has metrics, a "
                       "TensorBoard log and a report)", "unsupported_parameter", "integrations")
    hyper = req.hyperparameters
    if req.method is not None:
        if req.method.type != "supervised":
            raise ApiError(400, f"method.type {req.method.type!r} is not supported: tuneforge's fine-tuning API runs "
                           "'supervised' fine-tuning only", "unsupported_method", "method.type")
        if req.method.supervised is not None:
            if hyper is not None:
                raise ApiError(400, "give hyperparameters once: either hyperparameters or "
                               "method.supervised.hyperparameters", "invalid_request", "hyperparameters")
            hyper = req.method.supervised.hyperparameters
    return hyper or Hyper()


def resolve(hyper: Hyper, n_examples: int) -> dict[str, Any]:
    """Concrete values for "auto" from the number of training examples (as OpenAI fills them in)."""
    epochs = hyper.n_epochs if hyper.n_epochs != "auto" else 3 if n_examples < 1000 else 2 if n_examples < 5000 else 1
    batch = hyper.batch_size if hyper.batch_size != "auto" else max(1, min(8, math.ceil(n_examples / 8)))
    lr = hyper.learning_rate_multiplier if hyper.learning_rate_multiplier != "auto" else 1.0
    return {"n_epochs": epochs, "batch_size": batch, "learning_rate_multiplier": lr}


def fine_tuned_name(base_id: str, suffix: str | None, job_id: str) -> str:
    return f"ft:{base_id}:{suffix or ''}:{job_id}"


def recipe(model_name: str, device: str, job_id: str, runs_dir: str, data_dir: str, seed: int,
           hyper: dict[str, Any], extras: Extras, has_test: bool) -> dict[str, Any]:
    """The recipe (as a dict for ``Recipe.model_validate``) the job's ``tuneforge train`` runs."""
    return {
        "model": {"name": model_name, "device": device},
        "run": {"name": job_id, "output_dir": runs_dir, "seed": seed},
        "data": {"path": data_dir, "format": "chat", "max_length": extras.max_length},
        "train": {
            "method": extras.method, "lora": {"r": extras.lora_r, "alpha": 2 * extras.lora_r},
            "learning_rate": BASE_LR[extras.method] * hyper["learning_rate_multiplier"],
            "epochs": hyper["n_epochs"], "max_steps": extras.max_steps, "batch_size": hyper["batch_size"],
            "max_length": extras.max_length, "save_every": extras.save_every, "eval_every": extras.save_every,
            "log_every": 1,
        },
        "eval": {"after_train": extras.evaluate and has_test, "max_examples": extras.eval_examples,
                 "forgetting": extras.forgetting},
    }
