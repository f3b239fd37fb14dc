"""A storage URL with a password never reaches the files of a search's run folder or its log."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import yaml

from tuneforge.config import load_recipe
from tuneforge.errors import UserError
from tuneforge.runs import create_run
from tuneforge.strategies.tune import default_storage, run_search

from .test_tune_space import SPACE, _fake
from .test_tune_workers import _tune_recipe

PASSWORD = "hunter2-pw"  # not a word that appears in paths, test names or library output


def _leaks(folder: Path) -> list[str]:
    """Files under ``folder`` that contain the password (SQLite databases too, as bytes)."""
    return [str(p) for p in folder.rglob("*") if p.is_file() and PASSWORD.encode() in p.read_bytes()]


def _secret_sqlite_url(db: Path) -> str:
    # A SQLite URL cannot hold user:password@, but a URI filename can carry (and SQLite ignores) a query
    # parameter, which stands in for a database password here.
    return f"sqlite:///file:{db}?uri=true&password={PASSWORD}"


def test_storage_env_names_a_missing_variable(tmp_path, monkeypatch):
    f = tmp_path / "t.yaml"
    f.write_text(f"run: {{output_dir: {tmp_path / 'runs'}}}\n" + SPACE + "  storage_env: TF_TEST_STORAGE\n")
    recipe = load_recipe(f)
    monkeypatch.delenv("TF_TEST_STORAGE", raising=False)
    with pytest.raises(UserError, match="TF_TEST_STORAGE is not set"):
        default_storage(recipe, recipe.tune)
    monkeypatch.setenv("TF_TEST_STORAGE", "  ")
    with pytest.raises(UserError, match="TF_TEST_STORAGE is not set or empty"):
        default_storage(recipe, recipe.tune)
    monkeypatch.setenv("TF_TEST_STORAGE", "sqlite:///x.db")
    assert default_storage(recipe, recipe.tune) == "sqlite:///x.db"


def test_search_with_storage_env_writes_no_password(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TF_TEST_STORAGE", _secret_sqlite_url(tmp_path / "study.db"))
    f = tmp_path / "t.yaml"
    f.write_text(f"run: {{output_dir: {tmp_path / 'runs'}, name: envsearch}}\n" + SPACE
                 + "  storage_env: TF_TEST_STORAGE\n")
    recipe = load_recipe(f)
    run = create_run(recipe, "tune")
    dummy = tmp_path / "unused.jsonl"
    result = run_search(recipe, run, dummy, dummy, objective=_fake(recipe))
    assert result.best_value is not None and (tmp_path / "study.db").is_file()  # the URL in the variable was used
    assert _leaks(run.path) == []
    assert yaml.safe_load((run.path / "recipe.yaml").read_text())["tune"]["storage_env"] == "TF_TEST_STORAGE"
    assert "password=***" in (run.path / "manifest.json").read_text()


def test_tune_with_a_password_in_argv_leaks_it_nowhere(tiny_model_dir, tmp_path, monkeypatch, capsys):
    """The whole command: argv, resolved recipe, trial recipes, manifests, report, log and terminal."""
    from tuneforge.cli.main import main

    data = _tune_recipe(tiny_model_dir, tmp_path)
    data["tune"].pop("storage")
    recipe = tmp_path / "tune.yaml"
    recipe.write_text(yaml.safe_dump(data))
    monkeypatch.chdir(tmp_path)
    url = _secret_sqlite_url(tmp_path / "study.db")
    argv = ["tune", str(recipe), "--trials", "1", "--name", "secretive", "--storage", url]
    monkeypatch.setattr(sys, "argv", ["tuneforge", *argv])
    assert main(argv) == 0
    run = tmp_path / "runs" / "secretive"
    assert (run / "trials" / "trial-000" / "recipe.yaml").is_file() and (run / "best.yaml").is_file()
    assert (tmp_path / "study.db").is_file()
    assert _leaks(run) == []
    assert "tune: study workers in sqlite:///file:" in (run / "logs" / "run.log").read_text()
    out = capsys.readouterr()
    assert PASSWORD not in out.out + out.err
