"""Sharded training (FSDP2 over gloo, two CPU processes): a run killed after a checkpoint resumes to the
same weights and losses as an uninterrupted one, and to what one process trains with the same batch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.train.helpers import write_recipe
from tests.train.test_distributed import _free_port
from tuneforge.cli.main import main
from tuneforge.errors import UserError
from tuneforge.train import fsdp
from tuneforge.train.checkpoint import CRASH_ENV


@pytest.mark.parametrize(
    ("setting", "accelerate_type", "processes", "env", "expected"),
    [
        ("auto", "MULTI_CPU", 2, {}, "ddp"),
        ("fsdp", "MULTI_CPU", 2, {}, "fsdp"),
        ("auto", "MULTI_CPU", 2, {"ACCELERATE_USE_FSDP": "true"}, "fsdp"),  # accelerate launch --use_fsdp on CPUs
        ("auto", "FSDP", 2, {"ACCELERATE_USE_FSDP": "true"}, "accelerate-fsdp"),  # GPUs: accelerate shards
        ("fsdp", "FSDP", 2, {}, "accelerate-fsdp"),
        ("auto", "DEEPSPEED", 2, {}, "deepspeed"),
        ("auto", "NO", 1, {}, "single"),
        ("auto", "NO", 1, {"ACCELERATE_USE_FSDP": "true"}, "single"),
    ],
)
def test_the_engine_follows_the_recipe_and_the_launcher(setting, accelerate_type, processes, env, expected):
    assert fsdp.engine(setting, accelerate_type, processes, env) == expected


def test_fsdp_on_one_process_or_with_deepspeed_is_refused_with_the_fix():
    with pytest.raises(UserError, match="torchrun --nproc_per_node 2"):
        fsdp.engine("fsdp", "NO", 1, {})
    with pytest.raises(UserError, match="DeepSpeed"):
        fsdp.engine("fsdp", "DEEPSPEED", 2, {})


def _torchrun(recipe: Path, name: str, *extra: str, crash_at: str | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    env.pop(CRASH_ENV, None)
    if crash_at:
        env[CRASH_ENV] = crash_at
    return subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(_free_port()),
         "-m", "tuneforge.cli.main", "train", str(recipe), "--name", name, "--device", "cpu", *extra],
        env=env, capture_output=True, text=True, timeout=600,
    )


def _train_losses(run: Path) -> list[tuple[int, float]]:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [(r["step"], r["loss"]) for r in rows if r.get("split") == "train"]


def _weights(run: Path, out: str) -> dict[str, torch.Tensor]:
    return load_file(run / out / ("adapter_model.safetensors" if out == "adapter" else "model.safetensors"))


def _kill_resume_and_compare(tmp_path, tiny_model_dir, prepared_dir, method: str, out: str) -> None:
    common = dict(method=method, max_steps=6, save_every=2, eval_every=2, lora={"dropout": 0.0},
                  learning_rate=1e-3 if method == "lora" else 1e-4)
    sharded = write_recipe(tmp_path / "fsdp.yaml", tiny_model_dir, prepared_dir, tmp_path / "runs", batch_size=2,
                           distributed="fsdp", **common)
    whole = _torchrun(sharded, "whole")
    assert whole.returncode == 0, whole.stdout[-2000:] + whole.stderr[-3000:]
    assert "FSDP2: weights, gradients and optimizer state sharded over 2 processes" in whole.stdout
    # SIGKILL right after checkpoint 4 is complete: torchrun then stops the other process too.
    killed = _torchrun(sharded, "killed", crash_at="checkpoint-000004:marked")
    assert killed.returncode != 0
    runs = tmp_path / "runs"
    ckpt4 = runs / "killed" / "checkpoints" / "checkpoint-000004"
    assert not (runs / "killed" / out).exists()
    assert sorted(p.name for p in (ckpt4 / "dcp").glob("*.distcp")) == ["__0_0.distcp", "__1_0.distcp"]  # sharded
    resumed = _torchrun(sharded, "killed", "--resume")
    assert resumed.returncode == 0, resumed.stdout[-2000:] + resumed.stderr[-3000:]
    assert "resumed from step 4" in resumed.stdout

    a, b = _weights(runs / "whole", out), _weights(runs / "killed", out)
    assert a.keys() == b.keys()
    for name in a:
        assert torch.allclose(a[name], b[name], atol=1e-6, rtol=1e-5), name
    steps, losses = zip(*_train_losses(runs / "killed"), strict=True)
    assert steps == (1, 2, 3, 4, 5, 6)  # steps 5-6 logged once, by the resumed run
    assert list(losses) == pytest.approx([loss for _, loss in _train_losses(runs / "whole")], rel=1e-6)
    r_whole = json.loads((runs / "whole" / "train_result.json").read_text())
    r_killed = json.loads((runs / "killed" / "train_result.json").read_text())
    assert r_killed["resumed_from"] == 4
    assert r_killed["final_val_loss"] == pytest.approx(r_whole["final_val_loss"], rel=1e-6)

    # One process with the same 4-row global batch trains to the same weights: sharding changed nothing.
    single = write_recipe(tmp_path / "one.yaml", tiny_model_dir, prepared_dir, tmp_path / "runs", batch_size=4,
                          **common)
    assert main(["train", str(single), "--name", "one", "--device", "cpu"]) == 0
    c = _weights(runs / "one", out)
    assert c.keys() == a.keys()  # a standard folder: no sharding artefacts, tied weights saved once
    for name in a:
        assert torch.allclose(a[name], c[name], atol=1e-5, rtol=1e-4), name
    base = load_file(tiny_model_dir / "model.safetensors")  # LoRA B starts at zero; full weights at the base's
    start = {k: base.get(k, torch.zeros_like(v)) for k, v in a.items() if "lora_A" not in k}
    assert any(not torch.equal(a[k], v) for k, v in start.items())  # it trained


@pytest.mark.slow
def test_fsdp_lora_killed_and_resumed_matches_an_uninterrupted_run(tmp_path, tiny_model_dir, prepared_dir):
    _kill_resume_and_compare(tmp_path, tiny_model_dir, prepared_dir, "lora", "adapter")


@pytest.mark.slow
def test_fsdp_full_fine_tuning_killed_and_resumed_matches_an_uninterrupted_run(tmp_path, tiny_model_dir,
                                                                               prepared_dir):
    _kill_resume_and_compare(tmp_path, tiny_model_dir, prepared_dir, "full", "model")
