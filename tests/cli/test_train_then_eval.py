"""Every training run is evaluated when it ends (baselines, tuned, forgetting, report) unless --no-eval."""

from __future__ import annotations

from tuneforge.cli.main import main
from tuneforge.eval.results import read_results

ARGS = [
    "--data", "rotten-tomatoes", "--set", "data.template=sentiment", "--set", "data.max_examples=50",
    "--max-steps", "2", "--set", "train.eval_every=1", "--set", "eval.shots=[0]",
    "--set", "eval.forgetting_examples=4", "--set", "eval.forgetting_tasks=[boolq]",
]


def test_training_run_is_evaluated_by_default(run_dir, tiny_model_dir, capsys):
    assert main(["train", "--model", str(tiny_model_dir), "--name", "t", *ARGS]) == 0
    run = run_dir / "runs" / "t"
    systems = {(r.system, r.task) for r in read_results(run)}
    assert ("base zero-shot", "sentiment") in systems and ("tuned", "sentiment") in systems
    assert {("base", "forgetting:boolq"), ("tuned", "forgetting:boolq")} <= systems
    assert (run / "report.html").is_file()
    assert "report:" in capsys.readouterr().out


def test_no_eval_switches_it_off(run_dir, tiny_model_dir):
    assert main(["train", "--model", str(tiny_model_dir), "--name", "t", "--no-eval", *ARGS]) == 0
    run = run_dir / "runs" / "t"
    assert (run / "adapter").is_dir()
    assert not read_results(run) and not (run / "report.html").exists()
