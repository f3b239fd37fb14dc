"""Credentials in URLs are redacted wherever tuneforge writes text: files, logs and error messages."""

from __future__ import annotations

import logging

import pytest

from tuneforge.config.loader import describe_fields, dump_recipe, load_recipe
from tuneforge.errors import UserError
from tuneforge.secrets import RedactingFormatter, redact, redact_text, redact_url


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("postgresql://user:hunter2@db:5432/optuna", "postgresql://user:***@db:5432/optuna"),
        ("mysql+pymysql://root:pa/ss@db/optuna", "mysql+pymysql://root:***@db/optuna"),  # '/' in a password
        ("cannot open 'postgresql://u:hunter2@h/db': refused", "cannot open 'postgresql://u:***@h/db': refused"),
        ("sqlite:///file:/tmp/s.db?uri=true&password=hunter2&x=1", "sqlite:///file:/tmp/s.db?uri=true&password=***&x=1"),
        ("https://api.example.com/v1?api_key=AKIA1&q=2", "https://api.example.com/v1?api_key=***&q=2"),
        ("host=db password=hunter2 dbname=optuna", "host=db password=*** dbname=optuna"),
        ("--set train.TOKEN=hunter2", "--set train.TOKEN=***"),
    ],
)
def test_secrets_are_masked(text, expected):
    assert redact_text(text) == expected
    assert redact_text(expected) == expected  # redacting twice changes nothing


@pytest.mark.parametrize(
    "text",
    ["postgresql://user@db/optuna", "sqlite:////tmp/runs/study.db", "https://host:8080/path", "sort_key=3",
     "a plain log line", "user@example.com"],
)
def test_text_without_secrets_is_left_alone(text):
    assert redact_text(text) == text


def test_structures_and_urls():
    data = {"argv": ["tuneforge", "tune", "--storage", "postgresql://u:hunter2@h/db"], "n": 3, "none": None}
    assert redact(data) == {"argv": ["tuneforge", "tune", "--storage", "postgresql://u:***@h/db"], "n": 3,
                            "none": None}
    assert data["argv"][3].endswith("hunter2@h/db")  # the original is untouched
    assert redact_url(None) is None


def test_log_lines_and_tracebacks_are_redacted():
    formatter = RedactingFormatter("%(message)s")
    try:
        raise RuntimeError("connect to postgresql://u:hunter2@h/db failed")
    except RuntimeError:
        import sys

        record = logging.LogRecord("t", logging.ERROR, __file__, 1, "storage %s", ("mysql://a:hunter2@h/x",),
                                   sys.exc_info())
    out = formatter.format(record)
    assert "hunter2" not in out
    assert "storage mysql://a:***@h/x" in out and "RuntimeError: connect to postgresql://u:***@h/db" in out


def test_user_error_message_is_redacted():
    err = UserError("tune.storage: cannot open postgresql://u:hunter2@h/db", ["x.yaml:3: url=https://a:hunter2@b"])
    assert "hunter2" not in err.render()


def test_resolved_recipe_hides_the_storage_password(tmp_path):
    f = tmp_path / "t.yaml"
    f.write_text("tune:\n  storage: postgresql://optuna:hunter2@db/optuna\n  space:\n    learning_rate: {low: 0.001, high: 0.01}\n")
    recipe = load_recipe(f)
    assert recipe.tune.storage == "postgresql://optuna:hunter2@db/optuna"  # the process keeps the real URL
    dumped = dump_recipe(recipe)
    assert "hunter2" not in dumped and "postgresql://optuna:***@db/optuna" in dumped


def test_storage_env_is_documented_and_exclusive_with_storage(tmp_path):
    assert any(line.startswith("tune.storage_env ") and "environment variable" in line for line in describe_fields())
    f = tmp_path / "both.yaml"
    f.write_text("tune:\n  storage: sqlite:///a.db\n  storage_env: OPTUNA_STORAGE\n"
                 "  space:\n    learning_rate: {low: 0.001, high: 0.01}\n")
    with pytest.raises(UserError) as err:
        load_recipe(f)
    assert "give storage or storage_env, not both" in " ".join(err.value.problems)
