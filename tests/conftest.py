"""Shared fixtures: the real tokenizer and a tiny random model, so the unit suite runs in minutes.

Tests never reach a hub (HF_HUB_OFFLINE=1). The real bundled model is used only by tests marked
``slow``; they still run in CI.

The suite never depends on what an earlier session left in the home folder: unless the caller points
``TUNEFORGE_CACHE`` somewhere (as a developer may, to skip the one-off model conversion), the whole
session shares one new, empty cache folder, so every test run starts as a new user's machine does.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402

BUNDLED = "smollm2-135m-instruct"
_FRESH_CACHE: str | None = None


def pytest_configure(config) -> None:
    global _FRESH_CACHE
    if not os.environ.get("TUNEFORGE_CACHE"):
        _FRESH_CACHE = tempfile.mkdtemp(prefix="tuneforge-test-cache-")
        os.environ["TUNEFORGE_CACHE"] = _FRESH_CACHE  # subprocesses (CLI tests, workers) inherit it


def pytest_unconfigure(config) -> None:
    if _FRESH_CACHE:
        shutil.rmtree(_FRESH_CACHE, ignore_errors=True)


@pytest.fixture(scope="session")
def tokenizer():
    """The bundled SmolLM2 tokenizer (with its chat template)."""
    from tuneforge.models import load_tokenizer

    return load_tokenizer(BUNDLED)


@pytest.fixture()
def tiny_model(tokenizer):
    """A fresh tiny random Llama with the real vocabulary."""
    from tuneforge.models.tiny import tiny_model

    return tiny_model(tokenizer, seed=0)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, tokenizer) -> Path:
    """A tiny model saved as a standard Hugging Face folder (what --model accepts)."""
    from tuneforge.models.tiny import save_tiny_model

    return save_tiny_model(tmp_path_factory.mktemp("tiny-model"), tokenizer)


@pytest.fixture()
def run_dir(tmp_path, monkeypatch) -> Path:
    """Run tests from a temporary folder so run folders land there."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture(scope="session")
def postgres():
    """A real PostgreSQL server with pgvector for this test session (see tests/postgres.py)."""
    from tests.postgres import start_postgres

    # Not under pytest's basetemp: run as root, the server runs as an unprivileged user, which must reach its
    # data folder (pytest's is private to root), and another pytest session on the machine prunes old
    # basetemps and would delete a live server's data mid-run. A short path: the socket's must stay < ~100 chars.
    folder = Path(tempfile.mkdtemp(prefix="tf-pg-", dir="/tmp"))
    folder.chmod(0o755)
    pg = start_postgres(folder / "data")
    yield pg
    pg.stop()
    shutil.rmtree(folder, ignore_errors=True)
