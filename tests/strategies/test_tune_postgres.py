"""`tuneforge tune` on a real PostgreSQL server (started by the tests): two worker processes share one
study, and a worker killed mid-trial leaves a trial that the heartbeat marks failed and that is retried."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import yaml

from .test_tune_workers import _tune_recipe

ENV_VAR = "TUNEFORGE_TEST_STUDY_URL"


def _pg_recipe(model_dir: Path, tmp_path: Path, study: str, **tune) -> Path:
    data = _tune_recipe(model_dir, tmp_path)
    data["tune"].pop("storage")
    data["tune"].update(storage_env=ENV_VAR, study_name=study, **tune)
    path = tmp_path / "tune.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _worker(recipe: Path, name: str, trials: int, tmp_path: Path, env: dict) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "tuneforge.cli.main", "tune", str(recipe), "--trials", str(trials), "--name", name],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )


def _env(url: str) -> dict:
    return {**os.environ, ENV_VAR: url, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
            "TOKENIZERS_PARALLELISM": "false"}


def test_two_workers_share_one_postgresql_study(postgres, tiny_model_dir, tmp_path, monkeypatch):
    url = postgres.create_database("tune_workers")
    recipe = _pg_recipe(tiny_model_dir, tmp_path, "workers")
    env = _env(url)
    workers = [_worker(recipe, f"w{i}", 2, tmp_path, env) for i in (1, 2)]
    for w in workers:
        out = w.communicate(timeout=900)[0]  # a hang guard only
        assert w.returncode == 0, out[-3000:]
    study = optuna.load_study(study_name="workers", storage=url)
    assert sorted(t.number for t in study.trials) == [0, 1, 2, 3]  # one numbering across both workers
    workers_seen = {t.user_attrs["worker"] for t in study.trials}
    assert len(workers_seen) == 2
    finished = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    assert all(t.state in finished and t.intermediate_values for t in study.trials)
    # the run folders record where the study lives without the URL itself
    manifest = yaml.safe_load((tmp_path / "runs" / "w1" / "manifest.json").read_text())
    assert manifest["tune"]["storage_env"] == ENV_VAR


def test_a_killed_worker_leaves_a_failed_trial_that_is_retried(postgres, tiny_model_dir, tmp_path, monkeypatch):
    url = postgres.create_database("tune_killed")
    # long trials (so the kill lands mid-trial), a beat every second, dead after 2 s of silence
    recipe = _pg_recipe(tiny_model_dir, tmp_path, "killed", heartbeat_interval=1, grace_period=2,
                        max_steps_per_trial=400)
    data = yaml.safe_load(recipe.read_text())
    data["train"].update(max_steps=400, eval_every=400)
    recipe.write_text(yaml.safe_dump(data))
    log = open(tmp_path / "victim.log", "w")  # noqa: SIM115 - not a pipe: nobody reads it while we wait
    victim = subprocess.Popen(
        [sys.executable, "-m", "tuneforge.cli.main", "tune", str(recipe), "--trials", "1", "--name", "victim"],
        cwd=tmp_path, env=_env(url), stdout=log, stderr=subprocess.STDOUT,
    )
    running = None
    metrics = tmp_path / "runs" / "victim" / "trials" / "trial-000" / "metrics.jsonl"
    deadline = time.monotonic() + 600  # a hang guard only
    while running is None and time.monotonic() < deadline and victim.poll() is None:
        # mid-trial: the trial is running and its training has logged a step
        if metrics.is_file() and '"split": "train"' in metrics.read_text():
            study = optuna.load_study(study_name="killed", storage=url)
            running = next((t for t in study.get_trials(deepcopy=False)
                            if t.state == optuna.trial.TrialState.RUNNING), None)
        time.sleep(0.5)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    log.close()
    assert running is not None, (tmp_path / "victim.log").read_text()[-3000:]
    time.sleep(3)  # past the grace period: its last heartbeat is stale

    # Without the heartbeat this trial would stay RUNNING forever. The next worker to start a trial
    # marks it failed and runs its parameters again (retry_failed: 1) - here a short trial.
    data["train"].update(max_steps=2, eval_every=1)
    data["tune"].update(max_steps_per_trial=2)
    recipe.write_text(yaml.safe_dump(data))
    monkeypatch.setenv(ENV_VAR, url)
    monkeypatch.chdir(tmp_path)
    from tuneforge.cli.main import main

    assert main(["tune", str(recipe), "--trials", "1", "--name", "survivor"]) == 0
    study = optuna.load_study(study_name="killed", storage=url)
    states = {t.number: t.state for t in study.trials}
    assert states[running.number] == optuna.trial.TrialState.FAIL
    retried = [t for t in study.trials if optuna.storages.RetryFailedTrialCallback.retried_trial_number(t)
               == running.number]
    assert len(retried) == 1 and retried[0].state == optuna.trial.TrialState.COMPLETE
    assert retried[0].params == running.params
