"""What only the pgvector store has: a server to reach, an extension to enable, a URL from the
environment that never reaches a file, and writers on several machines. All on a real PostgreSQL."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tuneforge.config.rag import RagConfig
from tuneforge.errors import UserError
from tuneforge.rag.pgvector_store import PgVectorStore
from tuneforge.rag.store import ChunkRow, open_store

from .conftest import pg_database


def _unit(n: int, dim: int, seed: int = 0) -> np.ndarray:
    v = np.random.default_rng(seed).normal(size=(n, dim)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def _rows(n: int, prefix: str = "d") -> list[ChunkRow]:
    return [ChunkRow(f"{prefix}{i}#0", f"{prefix}{i}", 0, f"title {i}", "src", f"text {i}", 0, 6, "h") for i in range(n)]


def test_missing_env_var_is_one_line_and_writes_no_index(tmp_path, monkeypatch):
    monkeypatch.delenv("MY_PG", raising=False)
    cfg = RagConfig(index_dir=str(tmp_path / "idx"), store="pgvector", pg_url_env="MY_PG")
    with pytest.raises(UserError, match=r"\$MY_PG is not set: export MY_PG=postgresql://"):
        open_store(cfg, "all-minilm-l6-v2", 384, create=True)
    assert not (tmp_path / "idx" / "index.json").exists()  # a later run with the variable set starts clean


def test_unreachable_server_is_one_line_without_the_password(tmp_path, monkeypatch):
    monkeypatch.setenv("TUNEFORGE_PG_URL", "postgresql://tf:s3cret-pw@127.0.0.1:1/rag")
    cfg = RagConfig(index_dir=str(tmp_path / "idx"), store="pgvector")
    with pytest.raises(UserError, match="cannot reach PostgreSQL at postgresql://tf:\\*\\*\\*@127.0.0.1:1/rag") as err:
        open_store(cfg, "all-minilm-l6-v2", 384, create=True)
    assert "s3cret-pw" not in err.value.render() and "\n" not in err.value.render()


def test_a_user_who_may_not_enable_the_extension_is_told_the_fix(postgres):
    import psycopg

    postgres.create_database("noext")
    with psycopg.connect(postgres.url("noext", driver="postgresql"), autocommit=True) as conn:
        conn.execute("DROP ROLE IF EXISTS rag_reader")
        conn.execute("CREATE ROLE rag_reader LOGIN")
    url = postgres.url("noext", driver="postgresql").replace("postgres:@", "rag_reader:@")
    with pytest.raises(UserError, match="ask a superuser to run `CREATE EXTENSION vector;` in 'noext'"):
        PgVectorStore(url, "rag_x", 8)


def test_index_json_names_the_table_never_the_url(tmp_path, request, monkeypatch):
    url = pg_database(request, monkeypatch)
    cfg = RagConfig(index_dir=str(tmp_path / "My Index"), store="pgvector")
    open_store(cfg, "all-minilm-l6-v2", 384, create=True)
    meta = json.loads((tmp_path / "My Index" / "index.json").read_text())
    assert meta["store"] == "pgvector" and meta["pg_table"] == "rag_my_index"
    assert url not in json.dumps(meta) and "host=" not in json.dumps(meta)
    assert open_store(cfg).count() == 0  # reopened from index.json and the environment


def test_upserts_never_duplicate_and_a_wider_embedder_is_refused(request, monkeypatch):
    url = pg_database(request, monkeypatch)
    store = PgVectorStore(url, "rag_up", 16)
    vectors = _unit(20, 16)
    store.add(_rows(20), vectors)
    store.add(_rows(20)[:5], vectors[:5])  # another writer adding the same chunks again
    assert store.count() == 20
    with pytest.raises(UserError, match="holds 16-d vectors but the embedder makes 384-d"):
        PgVectorStore(url, "rag_up", 384)


def test_k_beyond_ef_search_still_returns_k_hits_through_the_index(request, monkeypatch):
    store = PgVectorStore(pg_database(request, monkeypatch), "rag_k", 16, ann_min_rows=100, ef=10)
    vectors = _unit(3000, 16, seed=3)
    store.add(_rows(3000), vectors)
    store.optimize()
    assert store.has_ann_index() and "Index Scan using" in store.search_plan(vectors[0], 100)
    hits = store.search(vectors[0], 100)  # HNSW returns at most ef_search rows: ef is raised to k
    assert len(hits) == 100 and hits[0].chunk_id == "d0#0" and hits[0].score == pytest.approx(1.0, abs=1e-5)
