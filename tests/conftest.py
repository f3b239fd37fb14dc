"""Shared fixtures: the real tokenizer and a tiny random model, so the unit suite runs in minutes.

Tests never reach a hub (HF_HUB_OFFLINE=1). The real bundled model is used only by tests marked
``slow``; they still run in CI.
"""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402

BUNDLED = "smollm2-135m-instruct"


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
