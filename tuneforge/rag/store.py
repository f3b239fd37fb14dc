"""Vector stores: the default embedded one on LanceDB, and `open_store`, which opens whichever an index uses.

A store holds chunks (id, document id, title, source, text, offsets, document hash, vector) and
answers three questions: which documents do you hold (with their content hashes, so the indexer can
skip unchanged ones), what are the k nearest chunks to this vector, and forget this document.
:class:`VectorStore` (in :mod:`tuneforge.rag.contract`) is the whole contract; the server-backed store for data that outgrows one
machine, PostgreSQL + pgvector, implements it in :mod:`tuneforge.rag.pgvector_store` (``rag.store:
pgvector``).

The index folder also holds ``index.json``: which embedder and chunking built the vectors, so a
query with a different embedder is refused instead of silently returning nonsense.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tuneforge import atomic
from tuneforge.errors import UserError
from tuneforge.rag.contract import ChunkRow, DocInfo, Hit, VectorStore

if TYPE_CHECKING:
    import numpy as np

    from tuneforge.config.rag import RagConfig

log = logging.getLogger(__name__)

META_FILE = "index.json"
__all__ = ["ChunkRow", "DocInfo", "Hit", "LanceStore", "VectorStore", "open_store"]


def _sql_str(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


class LanceStore(VectorStore):
    """Chunks in one LanceDB table on local disk: embedded (no server), columnar, versioned.

    Deletes write deletion vectors that every later scan and ANN search honours, and are committed to
    disk before returning, so a deleted document is gone for every process that opens the folder. Below
    ``ann_min_rows`` chunks search is exact (a flat scan); above, an IVF-HNSW index with scalar
    quantisation is built, and rows added after it are still found (LanceDB scans the unindexed tail).
    """

    TABLE = "chunks"

    def __init__(self, folder: str | Path, dim: int, ann_min_rows: int = 5_000, ef: int = 64, nprobes: int = 20):
        import lancedb

        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.dim = dim
        self.ann_min_rows = ann_min_rows
        self.ef = ef
        self.nprobes = nprobes
        # Strong read consistency: every query first looks for a newer table version, so a process that
        # keeps the store open (a server, `rag ask` in a notebook) sees other processes' deletes at once
        # and never reads files that a cleanup after those deletes removed.
        self.db = lancedb.connect(str(self.folder / "lance"), read_consistency_interval=dt.timedelta(0))
        self.table = self._open_or_create()

    def _schema(self):
        import pyarrow as pa

        return pa.schema([
            pa.field("chunk_id", pa.string()),
            pa.field("doc_id", pa.string()),
            pa.field("chunk_index", pa.int32()),
            pa.field("title", pa.string()),
            pa.field("source", pa.string()),
            pa.field("text", pa.string()),
            pa.field("start", pa.int64()),
            pa.field("end", pa.int64()),
            pa.field("doc_hash", pa.string()),
            pa.field("vector", pa.list_(pa.float32(), self.dim)),
        ])

    def _open_or_create(self):
        names = self.db.list_tables()
        names = getattr(names, "tables", names)
        if self.TABLE in names:
            table = self.db.open_table(self.TABLE)
            have = table.schema.field("vector").type.list_size
            if have != self.dim:
                raise UserError(f"{self.folder}: index holds {have}-d vectors but the embedder makes {self.dim}-d ones")
            return table
        return self.db.create_table(self.TABLE, schema=self._schema())

    def documents(self) -> dict[str, DocInfo]:
        cols = ["doc_id", "doc_hash", "title", "source"]
        data = self.table.search().select(cols).limit(None).to_arrow().to_pylist() if self.count() else []
        out: dict[str, DocInfo] = {}
        for row in data:
            info = out.get(row["doc_id"])
            if info is None:
                out[row["doc_id"]] = DocInfo(row["doc_id"], row["doc_hash"], row["title"], row["source"], 1)
            else:
                info.chunks += 1
        return out

    def add(self, rows: list[ChunkRow], vectors: np.ndarray) -> None:
        import pyarrow as pa

        if not rows:
            return
        if vectors.shape != (len(rows), self.dim):
            raise ValueError(f"expected {len(rows)}x{self.dim} vectors, got {vectors.shape}")
        columns: dict[str, Any] = {
            name: [getattr(r, name) for r in rows]
            for name in ("chunk_id", "doc_id", "chunk_index", "title", "source", "text", "start", "end", "doc_hash")
        }
        columns["vector"] = pa.FixedSizeListArray.from_arrays(pa.array(vectors.astype("float32").ravel()), self.dim)
        self.table.add(pa.table(columns, schema=self._schema()))

    def delete_documents(self, doc_ids: list[str]) -> int:
        if not doc_ids:
            return 0
        before = self.count()
        for start in range(0, len(doc_ids), 500):  # keep each predicate a reasonable size
            batch = doc_ids[start:start + 500]
            self.table.delete(f"doc_id IN ({', '.join(_sql_str(d) for d in batch)})")
        return before - self.count()

    def chunks_of(self, doc_id: str) -> list[ChunkRow]:
        cols = ["chunk_id", "doc_id", "chunk_index", "title", "source", "text", "start", "end", "doc_hash"]
        rows = self.table.search().where(f"doc_id = {_sql_str(doc_id)}").select(cols).limit(None).to_arrow().to_pylist()
        return sorted((ChunkRow(**r) for r in rows), key=lambda r: r.chunk_index)

    def count(self) -> int:
        return int(self.table.count_rows())

    def has_ann_index(self) -> bool:
        return any(ix.columns == ["vector"] for ix in self.table.list_indices())

    def search(self, vector: np.ndarray, k: int) -> list[Hit]:
        # nprobes/ef only matter once an ANN index exists (a flat scan ignores them); setting them always
        # saves two metadata round trips per query, which count at a 20 ms latency budget.
        cols = ["chunk_id", "doc_id", "title", "source", "text", "start", "end", "_distance"]

        def run() -> list[dict[str, Any]]:
            query = (self.table.search(vector.astype("float32"), vector_column_name="vector").metric("cosine")
                     .limit(k).nprobes(self.nprobes).ef(self.ef))
            return query.select(cols).to_arrow().to_pylist()

        try:
            rows = run()
        except (OSError, RuntimeError, ValueError):
            # Another process compacted and cleaned up between our version check and the read: the
            # files of the version we looked at are gone. Move to the newest version and ask again.
            self.table.checkout_latest()
            rows = run()
        return [
            Hit(r["chunk_id"], r["doc_id"], r["title"], r["source"], r["text"], 1.0 - float(r["_distance"]),
                int(r["start"]), int(r["end"]))
            for r in rows
        ]

    def optimize(self) -> None:
        """Build the ANN index once the table is big enough; otherwise fold new rows into it and compact."""
        n = self.count()
        if n >= self.ann_min_rows and not self.has_ann_index():
            log.info("building IVF_HNSW_SQ index over %d chunks", n)
            from lancedb.index import IvfHnswSq

            self.table.create_index("vector", config=IvfHnswSq(distance_type="cosine"))
        import warnings

        # Compacts small fragments, folds unindexed rows into the ANN index, and drops old versions so
        # deleted text does not linger on disk in earlier table versions (a delete must really delete).
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "removes every version except the latest": that is the point
            self.table.optimize(cleanup_older_than=dt.timedelta(seconds=0), delete_unverified=True)


STORES = {"lancedb": LanceStore}


def read_meta(folder: str | Path) -> dict[str, Any] | None:
    path = Path(folder) / META_FILE
    return json.loads(path.read_text()) if path.is_file() else None


def write_meta(folder: str | Path, meta: dict[str, Any]) -> None:
    atomic.write_json(Path(folder) / META_FILE, meta, sort_keys=True)


def open_store(
    config: RagConfig, embedder: str | None = None, dim: int | None = None, create: bool = False
) -> VectorStore:
    """Open the store in ``config.index_dir`` (or create it, given the embedder's name and ``dim``).

    When ``embedder`` is given, an index built by another embedder is refused: its vectors would not be
    comparable with the query's.
    """
    folder = Path(config.index_dir)
    meta = read_meta(folder)
    if meta is None:
        if not create or embedder is None or dim is None:
            raise UserError(f"{folder}: no RAG index here; build one with `tuneforge rag index pydoc-topics`")
        meta = {"store": config.store, "embedding_model": embedder, "dim": dim,
                "chunk_tokens": config.chunk_tokens, "chunk_overlap": config.chunk_overlap}
        if config.store == "pgvector":  # the table name, never the URL (it may hold a password)
            from tuneforge.rag.pgvector_store import default_table

            meta["pg_table"] = config.pg_table or default_table(folder)
        store = _construct(folder, meta, config)  # reachable and valid before index.json names it
        write_meta(folder, meta)
        return store
    if embedder is not None and meta.get("embedding_model") != embedder:
        raise UserError(
            f"{folder}: index was built with embedder {meta.get('embedding_model')!r}, not {embedder!r}; "
            f"set rag.embedding_model to match, or use another rag.index_dir"
        )
    return _construct(folder, meta, config)


def _construct(folder: Path, meta: dict[str, Any], config: RagConfig) -> VectorStore:
    name = meta.get("store", config.store)
    if name == "pgvector":  # imported only when chosen: psycopg is the optional `postgres` extra
        from tuneforge.rag.pgvector_store import open_pgvector

        return open_pgvector(config, meta)
    store_cls = STORES.get(name)
    if store_cls is None:
        raise UserError(f"{folder}: unknown store {name!r}; known: {', '.join([*STORES, 'pgvector'])}")
    return store_cls(folder, int(meta["dim"]), ann_min_rows=config.ann_min_rows, ef=config.ann_ef,
                     nprobes=config.ann_nprobes)


def remove_index(folder: str | Path) -> None:
    shutil.rmtree(folder, ignore_errors=True)
