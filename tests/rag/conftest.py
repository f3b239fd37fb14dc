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


STORES = ["lancedb", "pgvector"]


def pg_database(request, monkeypatch) -> str:
    """A fresh database on the session's real PostgreSQL, its libpq URL exported as TUNEFORGE_PG_URL."""
    import hashlib

    pg = request.getfixturevalue("postgres")
    name = "t_" + hashlib.sha1(request.node.nodeid.encode()).hexdigest()[:16]
    pg.create_database(name)
    url = pg.url(name, driver="postgresql")
    monkeypatch.setenv("TUNEFORGE_PG_URL", url)
    return url


@pytest.fixture(params=STORES)
def store_config(request, tmp_path, monkeypatch):
    """``rag_config`` on each store: LanceDB in a folder, pgvector on a real server (one database per test)."""
    from tuneforge.config.rag import RagConfig

    if request.param == "pgvector":
        pg_database(request, monkeypatch)
    return RagConfig(index_dir=str(tmp_path / "index"), chunk_tokens=64, chunk_overlap=16, top_k=3,
                     store=request.param)


@pytest.fixture(params=STORES)
def make_store(request, monkeypatch):
    """``make_store(folder, dim, ann_min_rows=...)``: a store handle; the same folder gives the same index."""
    if request.param == "lancedb":
        from tuneforge.rag.store import LanceStore

        return LanceStore
    from tuneforge.rag.pgvector_store import PgVectorStore, default_table

    url = pg_database(request, monkeypatch)
    return lambda folder, dim, **kw: PgVectorStore(url, default_table(folder), dim, **kw)
