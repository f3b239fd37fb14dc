"""`tuneforge ui` is closed by default: no key and no --no-auth, or --no-auth off loopback, is refused."""

from __future__ import annotations

from tuneforge.cli.main import main


def test_ui_without_a_key_is_refused(run_dir, monkeypatch, capsys):
    monkeypatch.delenv("TUNEFORGE_API_KEY", raising=False)
    assert main(["ui", "--port", "0"]) == 2
    assert "no API key" in capsys.readouterr().err


def test_no_auth_off_loopback_is_refused(run_dir, capsys):
    assert main(["ui", "--host", "0.0.0.0", "--no-auth", "--port", "0"]) == 2
    assert "loopback" in capsys.readouterr().err


def test_an_index_folder_without_an_index_is_refused(run_dir, tmp_path, capsys):
    assert main(["ui", "--no-auth", "--port", "0", "--index", str(tmp_path / "nothing")]) == 2
    err = capsys.readouterr().err
    assert "--index" in err and "no RAG index here" in err and "Traceback" not in err
