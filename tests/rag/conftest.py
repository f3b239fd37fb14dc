"""RAG fixtures: the real bundled MiniLM embedder (22M parameters, loaded once) and small real documents."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def embedder():
    from tuneforge.rag.embed import Embedder

    return Embedder("all-minilm-l6-v2", device="cpu", batch_size=16)


@pytest.fixture()
def rag_config(tmp_path):
    from tuneforge.config.rag import RagConfig

    return RagConfig(index_dir=str(tmp_path / "index"), chunk_tokens=64, chunk_overlap=16, top_k=3)


def topic(name: str) -> str:
    """Text of one of Python's own reference topics (real documents shipped with CPython)."""
    from pydoc_data.topics import topics

    return topics[name].strip()
