"""Checkpoint models: ``ft:<base>:<suffix>:<job-id>:ckpt-step-<N>`` answers chat like the job's final model.

OpenAI lets a client chat with a succeeded job's intermediate checkpoints by the names its checkpoints
list gives (``fine_tuned_model_checkpoint``). A tuneforge training checkpoint is not an adapter folder: it
holds the trainable weights under the training model's parameter names (``...lora_A.default.weight``),
while a PEFT adapter folder holds them without the adapter's name (``...lora_A.weight``) beside an
``adapter_config.json``. So on the first request for such a name the checkpoint's weights are written
once as an adapter folder (``jobs/<job-id>/checkpoint-models/step-<N>``) with the final adapter's config,
after checking they are exactly the final adapter's tensors by name and shape; the engine then loads it
on first use like any adapter. Only succeeded LoRA jobs' checkpoints are served (as OpenAI does): before
the end there is no adapter config to pair the weights with, and a full fine-tune has no adapter at all.
"""

from __future__ import annotations

import re
from pathlib import Path

from tuneforge import atomic
from tuneforge.runs import ADAPTER
from tuneforge.serve.errors import ApiError
from tuneforge.serve.finetune import progress

NAME = re.compile(r"(?P<model>ft:.+):ckpt-step-(?P<step>[0-9]{1,9})")
WEIGHTS = "adapter_model.safetensors"
CONFIG = "adapter_config.json"
TRAINING_ADAPTER = "default"  # the adapter name PEFT gives the one adapter tuneforge trains
FOLDER = "checkpoint-models"


def parse(name: str) -> tuple[str, str, int] | None:
    """(final model name, job id, step) of a checkpoint model name; None for any other name."""
    match = NAME.fullmatch(name)
    if match is None:
        return None
    return match["model"], match["model"].rsplit(":", 1)[-1], int(match["step"])


def adapter_name(key: str) -> str:
    """A training parameter's name as PEFT saves it in an adapter file (without ``.default``)."""
    return key.replace(f".{TRAINING_ADAPTER}.", ".")


def write_adapter(checkpoint: Path, final_adapter: Path, out: Path) -> None:
    """The checkpoint's weights as a PEFT adapter folder at ``out`` (written whole, atomically)."""
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    weights = {adapter_name(k): v for k, v in load_file(str(checkpoint / "trainable.safetensors")).items()}
    with safe_open(str(final_adapter / WEIGHTS), framework="pt") as final:
        expected = {k: tuple(final.get_slice(k).get_shape()) for k in final.keys()}  # noqa: SIM118 (not a dict)
    got = {k: tuple(v.shape) for k, v in weights.items()}
    if got != expected:
        odd = sorted(set(got.items()) ^ set(expected.items()))[:3]
        raise ApiError(500, f"checkpoint {checkpoint.name} does not match the job's adapter (e.g. {odd}); "
                       "it cannot be served", "server_error")
    with atomic.replace_folder(out) as tmp:
        save_file(weights, str(tmp / WEIGHTS), metadata={"format": "pt"})
        (tmp / CONFIG).write_bytes((final_adapter / CONFIG).read_bytes())


def adapter_folder(job: dict, run: Path, job_dir: Path, step: int) -> Path | None:
    """The adapter folder (under ``job_dir``) serving ``job``'s checkpoint at ``step``, made on first use;
    None if there is no such checkpoint to serve."""
    if job["status"] != "succeeded" or not (run / ADAPTER / CONFIG).is_file():
        return None
    found = dict(progress.checkpoints(run)).get(step)
    if found is None:
        return None
    out = job_dir / FOLDER / f"step-{step}"
    if not (out / WEIGHTS).is_file():
        write_adapter(found, run / ADAPTER, out)
    return out
