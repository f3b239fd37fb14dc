"""Checkpoints are atomic, and a run killed with SIGKILL resumes to the same final weights."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.train.helpers import write_recipe
from tuneforge.cli.main import main
from tuneforge.config import load_recipe
from tuneforge.runs import create_run
from tuneforge.train import checkpoint as ckpt
from tuneforge.train import train


def _fake_checkpoint(root: Path, step: int, complete: bool = True) -> Path:
    tmp = ckpt.tmp_folder(root, step)
    tmp.mkdir(parents=True)
    (tmp / "trainer_state.json").write_text("{}")
    if complete:
        return ckpt.finalize(root, step, keep=10)
    return tmp


def test_only_complete_checkpoints_are_resumed_and_old_ones_pruned(tmp_path):
    root = tmp_path / "checkpoints"
    for step in (2, 4, 6):
        _fake_checkpoint(root, step)
    _fake_checkpoint(root, 8, complete=False)  # killed while writing: still a .tmp folder
    (root / ckpt.checkpoint_name(10)).mkdir()  # renamed but marker never written
    assert ckpt.latest_checkpoint(root).name == "checkpoint-000006"
    ckpt.prune(root, keep=2, protect=set())
    assert sorted(p.name for p in root.iterdir()) == ["checkpoint-000004", "checkpoint-000006"]


KILLER = textwrap.dedent(
    """
    import os, signal, sys
    from pathlib import Path
    from tuneforge.config import load_recipe
    from tuneforge.runs import create_run
    from tuneforge.train import train

    recipe = load_recipe(sys.argv[1], {"run.name": "killed"})
    data = Path(sys.argv[2])

    def kill_after_step_5(step, loss):
        if step == 5:  # the last complete checkpoint is step 4: step 5 is lost work
            os.kill(os.getpid(), signal.SIGKILL)

    train(recipe, create_run(recipe, "train"), data / "train.jsonl", data / "val.jsonl", on_step=kill_after_step_5)
    """
)


def test_sigkill_mid_training_then_resume_gives_the_same_weights(tmp_path, tiny_model_dir, prepared_dir):
    # Dropout on: the resumed run only matches if RNG state is restored too. Epoch boundary inside the run
    # (48 examples pack into ~11 rows -> 3 steps per epoch at batch 2 x accum 2): the data position matters.
    recipe = write_recipe(
        tmp_path / "r.yaml", tiny_model_dir, prepared_dir, tmp_path / "runs",
        max_steps=8, save_every=2, eval_every=3, grad_accum=2, lora={"dropout": 0.1}, load_best_at_end=False,
        keep_checkpoints=2,
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    proc = subprocess.run([sys.executable, "-c", KILLER, str(recipe), str(prepared_dir)], env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    killed = tmp_path / "runs" / "killed"
    assert not (killed / "adapter").exists()
    assert ckpt.latest_checkpoint(killed / "checkpoints").name == "checkpoint-000004"
    # A half-written later checkpoint must be ignored, never resumed.
    (killed / "checkpoints" / "checkpoint-000006.tmp").mkdir()
    (killed / "checkpoints" / "checkpoint-000006.tmp" / "trainer_state.json").write_text("garbage")
    with open(killed / "metrics.jsonl", "a") as f:  # and a metrics row the kill cut short
        f.write('{"time": 1.0, "step": 6, "spl')

    assert main(["train", str(recipe), "--name", "killed", "--resume"]) == 0
    assert main(["train", str(recipe), "--name", "straight"]) == 0

    resumed = load_file(killed / "adapter" / "adapter_model.safetensors")
    straight = load_file(tmp_path / "runs" / "straight" / "adapter" / "adapter_model.safetensors")
    # Steps 5-6 ran twice but are logged once; the cut-short row is gone and every line parses.
    assert _train_rows(killed) == _train_rows(tmp_path / "runs" / "straight") == list(range(1, 9))
    assert resumed.keys() == straight.keys()
    for name in straight:
        assert torch.equal(resumed[name], straight[name]), name
    # And the weights really moved during the resumed part (not a copy of the step-4 checkpoint).
    at_4 = load_file(killed / "checkpoints" / "checkpoint-000004" / "trainable.safetensors")
    assert any(not torch.equal(v, resumed[k.replace(".default", "")]) for k, v in at_4.items() if "lora_B" in k)


def _train_rows(run: Path) -> list[int]:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [r["step"] for r in rows if r.get("split") == "train"]


def test_resume_before_the_first_checkpoint_starts_over_in_the_same_folder(tmp_path, tiny_model_dir, prepared_dir):
    # Killed before any checkpoint was complete (here: at step 3 of 6, checkpoints every 4): --resume must
    # not refuse (a run without --resume would go to a new folder, name-2), it starts at step 0 in place.
    recipe = write_recipe(tmp_path / "r.yaml", tiny_model_dir, prepared_dir, tmp_path / "runs",
                          save_every=4, lora={"dropout": 0.1})
    early = load_recipe(recipe, {"run.name": "early"})

    def crash_at_step_3(step: int, loss: float) -> None:
        if step == 3:
            raise RuntimeError("stand-in for kill -9")

    with pytest.raises(RuntimeError, match="kill -9"):
        train(early, create_run(early, "train"), prepared_dir / "train.jsonl", prepared_dir / "val.jsonl",
              on_step=crash_at_step_3)
    assert ckpt.latest_checkpoint(tmp_path / "runs" / "early" / "checkpoints") is None

    assert main(["train", str(recipe), "--name", "early", "--resume"]) == 0
    assert main(["train", str(recipe), "--name", "straight"]) == 0
    assert not (tmp_path / "runs" / "early-2").exists()
    assert _train_rows(tmp_path / "runs" / "early") == [1, 2, 3, 4, 5, 6]  # the lost steps are logged once
    resumed = load_file(tmp_path / "runs" / "early" / "adapter" / "adapter_model.safetensors")
    straight = load_file(tmp_path / "runs" / "straight" / "adapter" / "adapter_model.safetensors")
    assert resumed.keys() == straight.keys()
    assert all(torch.equal(resumed[k], straight[k]) for k in straight)


def test_resume_after_training_finished_does_not_train_again(tmp_path, tiny_model_dir, prepared_dir, capsys):
    # Killed during the evaluation that follows training: the adapter and train_result.json are written.
    # --resume goes straight to the evaluation, without re-running the steps after the last checkpoint.
    recipe = write_recipe(tmp_path / "r.yaml", tiny_model_dir, prepared_dir, tmp_path / "runs", max_steps=5)
    assert main(["train", str(recipe), "--name", "done"]) == 0
    run = tmp_path / "runs" / "done"
    adapter = (run / "adapter" / "adapter_model.safetensors").read_bytes()
    rows = _train_rows(run)
    capsys.readouterr()

    assert main(["train", str(recipe), "--name", "done", "--resume"]) == 0
    out = capsys.readouterr().out
    assert "training already finished at step 5" in out and "done: 5 steps" in out
    assert _train_rows(run) == rows == [1, 2, 3, 4, 5]  # no step trained (or logged) twice
    assert (run / "adapter" / "adapter_model.safetensors").read_bytes() == adapter
