"""`tuneforge tune` with real (tiny-model) training: pruning stops a trial's training, and two worker
processes pointed at one SQLite study share its trials."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import optuna
import yaml

from tuneforge.config.recipe import Recipe
from tuneforge.runs import create_run

from .test_multitask import EXAMPLES, shrink


def _tune_recipe(model_dir: Path, tmp_path: Path) -> dict:
    data = shrink(yaml.safe_load((EXAMPLES / "tune.yaml").read_text()), model_dir, tmp_path / "runs")
    data["data"]["max_examples"] = 30
    data["train"].update(max_steps=2, eval_every=1)
    data["tune"].update(max_steps_per_trial=2, startup_trials=1,
                        storage=f"sqlite:///{tmp_path / 'study.db'}", study_name="workers")
    return data


def test_pruned_trial_stops_training_early(tokenizer, tiny_model_dir, tmp_path, monkeypatch):
    from tuneforge.strategies.common import prepare_training_files
    from tuneforge.strategies.tune import make_objective

    monkeypatch.chdir(tmp_path)
    recipe = Recipe.model_validate(_tune_recipe(tiny_model_dir, tmp_path))
    run = create_run(recipe, "tune")
    files = prepare_training_files(recipe, run, tokenizer)
    # A pruner that prunes at the first report: training must stop at the first validation.
    study = optuna.create_study(pruner=optuna.pruners.ThresholdPruner(upper=0.0))
    study.optimize(make_objective(recipe, run, files.train, files.val, tokenizer=tokenizer), n_trials=1)
    trial = study.trials[0]
    assert trial.state == optuna.trial.TrialState.PRUNED
    assert list(trial.intermediate_values) == [1]
    result = json.loads((Path(trial.user_attrs["run"]) / "train_result.json").read_text())
    assert result["steps"] == 1  # of 2


def test_two_workers_share_one_sqlite_study(tiny_model_dir, tmp_path, monkeypatch):
    """One worker is another process (as on a second machine), the other runs here at the same time."""
    from tuneforge.cli.main import main

    recipe = tmp_path / "tune.yaml"
    recipe.write_text(yaml.safe_dump(_tune_recipe(tiny_model_dir, tmp_path)))
    monkeypatch.chdir(tmp_path)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    other = subprocess.Popen(
        [sys.executable, "-m", "tuneforge.cli.main", "tune", str(recipe), "--trials", "2", "--name", "w1"],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    assert main(["tune", str(recipe), "--trials", "2", "--name", "w2"]) == 0
    output = other.communicate(timeout=800)[0]  # a hang guard only
    assert other.returncode == 0, output

    study = optuna.load_study(study_name="workers", storage=f"sqlite:///{tmp_path / 'study.db'}")
    assert len(study.trials) == 4
    assert sorted(t.number for t in study.trials) == [0, 1, 2, 3]  # one numbering across both workers
    by_worker: dict[str, int] = {}
    for t in study.trials:
        by_worker[t.user_attrs["worker"]] = by_worker.get(t.user_attrs["worker"], 0) + 1
        assert t.intermediate_values  # validation losses were reported as training went
    assert sorted(by_worker.values()) == [2, 2]
    # The worker that finished last saw every trial: its best recipe is the study's best.
    runs = [tmp_path / "runs" / f"w{i}" for i in (1, 2)]
    last = max(runs, key=lambda r: (r / "tune" / "report.html").stat().st_mtime)
    table = json.loads((last / "tune" / "trials.json").read_text())
    assert len(table["trials"]) == 4
    assert table["best_value"] == study.best_value
    best = yaml.safe_load((last / "best.yaml").read_text())
    assert best["train"]["learning_rate"] == study.best_params["learning_rate"]
    assert "tune" not in best or best["tune"] is None
    assert (last / "tune" / "history.svg").is_file()
