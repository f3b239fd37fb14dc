"""What the `tuneforge` command prints when something other than a user mistake goes wrong."""

from __future__ import annotations

from tuneforge.cli import config as config_cli
from tuneforge.cli.main import main


def test_an_unexpected_error_prints_a_redacted_traceback(monkeypatch, capsys):
    # a database driver's error quotes the connection URL, password and all
    def boom(args):
        raise RuntimeError("could not connect to postgresql://tuner:hunter2@db.internal/optuna?sslpassword=s3cret")

    monkeypatch.setattr(config_cli, "cmd_docs", boom)
    assert main(["config", "docs"]) == 1
    err = capsys.readouterr().err
    assert "Traceback" in err and "RuntimeError" in err  # still useful in a bug report
    assert "postgresql://tuner:***@db.internal" in err
    assert "hunter2" not in err and "s3cret" not in err


def test_a_user_mistake_names_file_line_and_field_without_a_traceback(tmp_path, capsys):
    bad = tmp_path / "recipe.yaml"
    bad.write_text("train:\n  learning_rate: fast\n")
    assert main(["config", "show", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "recipe.yaml:2: train.learning_rate:" in err
