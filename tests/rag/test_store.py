"""Index, update and delete on each real store (LanceDB on disk, pgvector on a real PostgreSQL that the
tests start), checked through retrieval: the `VectorStore` contract."""

from __future__ import annotations

import numpy as np
import pytest

from tuneforge.errors import UserError
from tuneforge.rag.documents import Document
from tuneforge.rag.index import index_documents
from tuneforge.rag.store import ChunkRow, LanceStore, open_store

from .conftest import topic

TOPICS = ["pass", "break", "del", "return", "lambda"]


def _docs() -> list[Document]:
    return [Document(doc_id=f"pydoc-topics/{t}", text=topic(t), title=t) for t in TOPICS]


def _ids(store, embedder, question, k=5):
    return [h.doc_id for h in store.search(embedder.embed_query(question), k)]


def test_index_is_idempotent_and_retrieves_the_right_document(store_config, embedder):
    store = open_store(store_config, embedder.name, embedder.dim, create=True)
    first = index_documents(store, embedder, _docs(), 64, 16, progress=False)
    assert sorted(first.added) == sorted(f"pydoc-topics/{t}" for t in TOPICS)
    assert first.total_chunks == store.count() > len(TOPICS)
    again = index_documents(store, embedder, _docs(), 64, 16, progress=False)
    assert again.chunks_written == 0 and len(again.unchanged) == len(TOPICS)
    assert store.count() == first.total_chunks
    assert _ids(store, embedder, "Which exception is raised when deleting an unbound name?")[0] == "pydoc-topics/del"


def test_changed_document_replaces_all_its_chunks(store_config, embedder):
    store = open_store(store_config, embedder.name, embedder.dim, create=True)
    index_documents(store, embedder, _docs(), 64, 16, progress=False)
    before = store.documents()["pydoc-topics/return"].chunks
    assert before > 1
    shorter = Document(doc_id="pydoc-topics/return", text="The return statement ends a function call.", title="return")
    report = index_documents(store, embedder, [shorter], 64, 16, progress=False)
    assert report.updated == ["pydoc-topics/return"]
    chunks = store.chunks_of("pydoc-topics/return")
    assert [c.text for c in chunks] == [shorter.text]
    hits = store.search(embedder.embed_query("StopIteration generator return"), 20)
    assert not any("StopIteration" in h.text for h in hits if h.doc_id == "pydoc-topics/return")


def test_deleted_document_is_never_retrieved_again_even_after_reopening(store_config, embedder):
    store = open_store(store_config, embedder.name, embedder.dim, create=True)
    index_documents(store, embedder, _docs(), 64, 16, progress=False)
    question = "What happens when a pass statement is executed?"
    assert _ids(store, embedder, question)[0] == "pydoc-topics/pass"
    removed = store.delete_documents(["pydoc-topics/pass"])
    assert removed > 0
    store.optimize()
    total = store.count()
    for s in (store, open_store(store_config, embedder.name)):  # this handle, and a fresh one
        assert "pydoc-topics/pass" not in s.documents()
        assert s.count() == total
        assert "pydoc-topics/pass" not in _ids(s, embedder, question, k=total)
    if store_config.store == "lancedb":  # old table versions (which still held the text) are gone from disk too
        assert len(LanceStore(store_config.index_dir, embedder.dim).table.list_versions()) == 1


def test_store_refuses_another_embedder_and_missing_index(store_config, embedder):
    with pytest.raises(UserError, match="no RAG index"):
        open_store(store_config)
    open_store(store_config, embedder.name, embedder.dim, create=True)
    with pytest.raises(UserError, match="built with embedder"):
        open_store(store_config, "some/other-model", 768)


def test_ann_index_keeps_deletes_and_finds_new_rows(tmp_path, make_store):
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(600, 32)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    rows = [ChunkRow(f"d{i // 2}#{i % 2}", f"d{i // 2}", i % 2, "", "", f"text {i}", 0, 1, "h") for i in range(600)]
    store = make_store(tmp_path / "ann", 32, ann_min_rows=256)
    store.add(rows, vectors)
    store.optimize()
    assert store.has_ann_index()
    if hasattr(store, "search_plan"):  # pgvector: the searches below really go through the HNSW index
        assert "Index Scan using" in store.search_plan(vectors[10], 50)
    assert store.search(vectors[10], 1)[0].chunk_id == "d5#0"
    store.delete_documents(["d5"])
    assert all(h.doc_id != "d5" for h in store.search(vectors[10], 50))
    extra = rng.normal(size=(1, 32)).astype(np.float32)
    extra /= np.linalg.norm(extra)
    store.add([ChunkRow("new#0", "new", 0, "", "", "new", 0, 1, "h")], extra)  # after the index was built
    assert store.search(extra[0], 1)[0].chunk_id == "new#0"
    reopened = make_store(tmp_path / "ann", 32, ann_min_rows=256)
    assert all(h.doc_id != "d5" for h in reopened.search(vectors[10], 50))


def test_an_open_handle_sees_another_handles_delete(tmp_path, make_store):
    """A long-lived reader (a server) must not return a document another process deleted, nor crash."""
    rng = np.random.default_rng(1)
    vectors = rng.normal(size=(40, 8)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    reader = make_store(tmp_path / "s", 8)
    for part in range(4):  # several fragments, so compaction rewrites files the reader once used
        ids = range(part * 10, part * 10 + 10)
        reader.add([ChunkRow(f"d{i}#0", f"d{i}", 0, "", "", f"t{i}", 0, 1, "h") for i in ids], vectors[list(ids)])
    assert reader.search(vectors[3], 1)[0].doc_id == "d3"
    writer = make_store(tmp_path / "s", 8)
    writer.delete_documents(["d3"])
    writer.optimize()
    assert all(h.doc_id != "d3" for h in reader.search(vectors[3], 40))
    assert reader.count() == 39


def test_embedder_names_resolve_offline(tmp_path):
    from tuneforge.rag.embed import resolve_embedder

    folder = resolve_embedder("all-minilm-l6-v2")
    assert (folder / "modules.json").is_file()
    assert resolve_embedder(str(folder)) == folder  # any local sentence-transformers folder
    with pytest.raises(UserError, match="nothing is downloaded"):
        resolve_embedder("sentence-transformers/all-mpnet-base-v2")


def test_a_failed_index_json_write_leaves_the_previous_file(tmp_path):
    from tests.faults import disk_full, snapshot
    from tuneforge.rag.store import write_meta

    meta = {"store": "lancedb", "embedding_model": "all-minilm-l6-v2", "dim": 384, "note": "x" * 2000}
    write_meta(tmp_path, meta)
    before = snapshot(tmp_path)
    with disk_full(1024), pytest.raises(OSError):
        write_meta(tmp_path, {**meta, "dim": 768})
    assert snapshot(tmp_path) == before
