"""Two processes (DDP over gloo, CPU) train to the same weights as one process with the same global batch."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file

from tests.train.helpers import write_recipe
from tuneforge.cli.main import main


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_match_one_process_with_the_same_global_batch(tmp_path, tiny_model_dir, prepared_dir):
    # Global batch 4 rows x 2 accumulation steps in both runs; no dropout (each process has its own RNG).
    common = dict(max_steps=4, grad_accum=2, save_every=100, eval_every=2, lora={"dropout": 0.0}, load_best_at_end=False)
    one = write_recipe(tmp_path / "one.yaml", tiny_model_dir, prepared_dir, tmp_path / "runs", batch_size=4, **common)
    two = write_recipe(tmp_path / "two.yaml", tiny_model_dir, prepared_dir, tmp_path / "runs", batch_size=2, **common)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(_free_port()),
         "-m", "tuneforge.cli.main", "train", str(two), "--name", "two", "--device", "cpu"],
        env=env, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert main(["train", str(one), "--name", "one", "--device", "cpu"]) == 0

    runs = tmp_path / "runs"
    assert sorted(p.name for p in runs.iterdir()) == ["one", "two"]  # both processes shared one run folder
    a = load_file(runs / "one" / "adapter" / "adapter_model.safetensors")
    b = load_file(runs / "two" / "adapter" / "adapter_model.safetensors")
    assert a.keys() == b.keys()
    for name in a:
        assert torch.allclose(a[name], b[name], atol=1e-6, rtol=1e-5), name
    base_b = {k: v for k, v in b.items() if "lora_B" in k}
    assert any(v.abs().sum() > 0 for v in base_b.values())  # LoRA B starts at zero: it trained
    import json

    r1 = json.loads((runs / "one" / "train_result.json").read_text())
    r2 = json.loads((runs / "two" / "train_result.json").read_text())
    assert r1["train_tokens"] == r2["train_tokens"]
    assert abs(r1["final_val_loss"] - r2["final_val_loss"]) < 1e-5
