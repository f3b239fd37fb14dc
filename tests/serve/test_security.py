"""Closed by default: key resolution, constant-time checks, and the CLI's refusals."""

from __future__ import annotations

import logging

import pytest

from tuneforge.cli.main import main
from tuneforge.errors import UserError
from tuneforge.serve.security import is_loopback, key_matches, resolve_api_key


def test_key_sources_and_refusals(tmp_path, monkeypatch):
    monkeypatch.delenv("TF_TEST_KEY", raising=False)
    with pytest.raises(UserError, match="no API key"):
        resolve_api_key("TF_TEST_KEY", None, False, "127.0.0.1")
    monkeypatch.setenv("TF_TEST_KEY", "env-key-123456")
    assert resolve_api_key("TF_TEST_KEY", None, False, "127.0.0.1") == "env-key-123456"
    key_file = tmp_path / "key"
    key_file.write_text("file-key-123456\n")
    assert resolve_api_key("TF_TEST_KEY", str(key_file), False, "0.0.0.0") == "file-key-123456"
    assert resolve_api_key("TF_TEST_KEY", None, True, "127.0.0.1") is None
    with pytest.raises(UserError, match="loopback"):
        resolve_api_key("TF_TEST_KEY", None, True, "0.0.0.0")
    monkeypatch.setenv("TF_TEST_KEY", "short")
    with pytest.raises(UserError, match="shorter"):
        resolve_api_key("TF_TEST_KEY", None, False, "127.0.0.1")


def test_bearer_check():
    assert key_matches("Bearer secret-key-1", "secret-key-1")
    assert key_matches("bearer secret-key-1", "secret-key-1")
    assert not key_matches("Bearer secret-key-2", "secret-key-1")
    assert not key_matches("Basic secret-key-1", "secret-key-1")
    assert not key_matches(None, "secret-key-1")
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0")


def test_cli_refuses_to_start_open(monkeypatch, capsys, tiny_model_dir):
    monkeypatch.delenv("TUNEFORGE_API_KEY", raising=False)
    assert main(["serve", "--model", str(tiny_model_dir)]) == 2
    assert "no API key" in capsys.readouterr().err
    assert main(["serve", "--model", str(tiny_model_dir), "--no-auth", "--host", "0.0.0.0"]) == 2
    assert "loopback" in capsys.readouterr().err


def test_cli_rejects_bad_adapters(monkeypatch, capsys, tmp_path, tiny_model_dir):
    monkeypatch.setenv("TUNEFORGE_API_KEY", "a-long-enough-key")
    assert main(["serve", "--model", str(tiny_model_dir), "--adapter-dir", f"x={tmp_path}"]) == 2
    assert "not a PEFT adapter folder" in capsys.readouterr().err
    assert main(["serve", "--model", str(tiny_model_dir), "--adapter-dir", "oops"]) == 2
    assert "NAME=PATH" in capsys.readouterr().err


@pytest.mark.parametrize(("mode", "warned"), [(0o600, False), (0o400, False), (0o640, True), (0o644, True)])
def test_a_key_file_others_can_read_draws_a_warning(tmp_path, caplog, mode, warned):
    key_file = tmp_path / "key"
    key_file.write_text("file-key-123456\n")
    key_file.chmod(mode)
    with caplog.at_level(logging.WARNING, logger="tuneforge.serve"):
        assert resolve_api_key("TF_TEST_KEY", str(key_file), False, "127.0.0.1") == "file-key-123456"
    assert ("chmod 600" in caplog.text) is warned
