"""Fixtures for the training tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.train.helpers import write_prepared


@pytest.fixture(scope="session")
def prepared_dir(tmp_path_factory) -> Path:
    """train.jsonl / val.jsonl of real Rotten Tomatoes review snippets (48 / 16 conversations)."""
    return write_prepared(tmp_path_factory.mktemp("prepared"))
