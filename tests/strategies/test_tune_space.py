"""Search spaces, study storage, best recipe and report, with a fake objective (no training here)."""

from __future__ import annotations

import math
from pathlib import Path

import optuna
import pytest

from tuneforge.config import load_recipe
from tuneforge.errors import UserError
from tuneforge.runs import create_run
from tuneforge.strategies.tune import apply_params, open_study, run_search, suggest

SPACE = """
tune:
  n_trials: 4
  study_name: unit
  startup_trials: 2
  space:
    learning_rate: {low: 1.0e-5, high: 1.0e-2, log: true}
    lora.r: {choices: [4, 8, 16]}
    epochs: {low: 1, high: 3, integer: true}
    weight_decay: {low: 0.0, high: 0.1, step: 0.05}
"""


def _recipe(tmp_path: Path, extra: str = ""):
    f = tmp_path / "tune.yaml"
    f.write_text(f"run: {{output_dir: {tmp_path / 'runs'}}}\n" + SPACE + extra)
    return load_recipe(f)


def _fake(recipe):
    """A smooth bowl in log(lr) with per-step reports, so the pruner has curves to compare."""

    def objective(trial: optuna.Trial) -> float:
        params = suggest(trial, recipe.tune.space)
        trial.set_user_attr("worker", "fake")
        target = (math.log10(params["learning_rate"]) + 3.5) ** 2 + params["weight_decay"]
        for step in range(1, 4):
            trial.report(target + 1.0 / step, step)
            if trial.should_prune():
                raise optuna.TrialPruned()
        return target

    return objective


def test_suggest_stays_in_declared_ranges(tmp_path):
    recipe = _recipe(tmp_path)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(20):
        trial = study.ask()
        p = suggest(trial, recipe.tune.space)
        assert 1e-5 <= p["learning_rate"] <= 1e-2
        assert p["lora.r"] in (4, 8, 16)
        assert p["epochs"] in (1, 2, 3)
        assert p["weight_decay"] in (0.0, 0.05, 0.1)
        tuned = apply_params(recipe, p, max_steps=5)
        assert tuned.train.lora.r == p["lora.r"]
        assert tuned.train.learning_rate == p["learning_rate"]
        assert tuned.train.max_steps == 5
        study.tell(trial, 0.0)
    assert recipe.train.lora.r == 16  # the original recipe is untouched


@pytest.mark.parametrize(
    ("space", "message"),
    [
        ("lora.rank: {low: 1, high: 4}", "cannot search lora.rank"),
        ("learning_rate: {low: 0.1, high: 0.01}", "above high"),
        ("learning_rate: {low: 0, high: 0.1, log: true}", "log scale needs low > 0"),
        ("batch_size: {low: 1}", "give low and high"),
    ],
)
def test_bad_search_space_is_reported_at_load(tmp_path, space, message):
    f = tmp_path / "bad.yaml"
    f.write_text(f"tune:\n  space:\n    {space}\n")
    with pytest.raises(UserError) as err:
        load_recipe(f)
    assert message in " ".join(err.value.problems)
    assert "bad.yaml:" in " ".join(err.value.problems)


def test_sampled_value_the_schema_rejects_is_a_user_error(tmp_path):
    recipe = _recipe(tmp_path)
    with pytest.raises(UserError, match="not a valid train section"):
        apply_params(recipe, {"lora.dropout": 1.5})


def test_two_workers_on_one_storage_share_the_study(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    recipe = _recipe(tmp_path)
    storage = f"sqlite:///{tmp_path / 'shared.db'}"
    recipe.tune.storage = storage
    recipe.tune.pruner = "none"  # every trial completes, so the importance plot is always drawn
    dummy = tmp_path / "unused.jsonl"
    first = run_search(recipe, create_run(recipe, "tune"), dummy, dummy, objective=_fake(recipe))
    recipe.tune.n_trials = 3
    second_run = create_run(recipe, "tune")
    second = run_search(recipe, second_run, dummy, dummy, objective=_fake(recipe))
    study = optuna.load_study(study_name="unit", storage=storage)
    assert len(study.trials) == 7  # 4 + 3: the second worker joined the first one's study
    assert second.best_value == pytest.approx(study.best_value)
    assert second.best_value <= first.best_value
    # The best trial is written as a recipe that loads and carries the best values, and no tune section.
    best = load_recipe(second.best_recipe)
    assert best.tune is None
    assert best.train.learning_rate == pytest.approx(study.best_params["learning_rate"])
    assert best.train.lora.r == study.best_params["lora.r"]
    report = (second_run.path / "tune" / "report.html").read_text()
    assert "7 trials" in report
    import xml.etree.ElementTree as ET

    for svg in ("history", "curves", "slice-learning_rate", "importance"):
        root = ET.parse(second_run.path / "tune" / f"{svg}.svg").getroot()  # well-formed SVG
        assert root.tag.endswith("svg") and len(root) > 3
    # One dot per complete trial in the history plot.
    history = ET.parse(second_run.path / "tune" / "history.svg").getroot()
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    dots = [e for e in history.iter() if e.tag.endswith("circle") and e.get("fill") != "none"]
    assert len(dots) == len(complete)


def test_default_storage_is_a_sqlite_file_next_to_runs(tmp_path):
    recipe = _recipe(tmp_path)
    from tuneforge.strategies.tune import default_storage

    url = default_storage(recipe, recipe.tune)
    assert url == f"sqlite:///{(tmp_path / 'runs' / 'unit.db').resolve()}"
    study = open_study(recipe.tune, url, seed=0)
    assert study.study_name == "unit"
    assert (tmp_path / "runs" / "unit.db").is_file()


def test_cli_without_a_tune_section_says_what_to_add(tmp_path, capsys):
    from tuneforge.cli.main import main

    f = tmp_path / "plain.yaml"
    f.write_text("train: {learning_rate: 1.0e-4}\n")
    assert main(["tune", str(f)]) == 2
    assert "add tune.space" in capsys.readouterr().err
