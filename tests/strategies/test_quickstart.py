"""The quickstart runs every stage for real (on the tiny model here) and reports only what ran."""

from __future__ import annotations

import json

from tuneforge.cli.main import main
from tuneforge.eval.results import read_results


def test_quickstart_runs_the_whole_lifecycle(run_dir, tiny_model_dir, capsys):
    rc = main([
        "quickstart", "--model", str(tiny_model_dir), "--examples", "60", "--name", "qs",
        "--set", "train.max_steps=2", "--set", "train.eval_every=1", "--set", "eval.shots=[0,1]",
        "--set", "eval.forgetting_examples=4", "--set", "eval.max_new_tokens=2",
    ])
    assert rc == 0
    out = capsys.readouterr().out
    run = run_dir / "runs" / "qs"
    for stage in ("1. prepare data", "2. fine-tune (LoRA)", "3. evaluate", "4. report"):
        assert f"[ran] {stage}" in out
    assert (run / "adapter" / "adapter_config.json").is_file()
    assert (run / "report.html").is_file()
    systems = {(r.system, r.task) for r in read_results(run)}
    assert ("base zero-shot", "sentiment") in systems and ("base 1-shot", "sentiment") in systems
    assert ("tuned", "sentiment") in systems
    assert any(task.startswith("forgetting") for _, task in systems)
    manifest = json.loads((run / "manifest.json").read_text())
    assert any(k.endswith("train.jsonl") for k in manifest["inputs"])  # data hashes recorded
    assert "base vs tuned on test prompts" in out
