"""The vector store on a PostgreSQL server with the pgvector extension: for indexes shared by a team.

One table per index (``rag.pg_table``, default ``rag_<index folder name>``) holds every chunk with its
text, offsets, document hash and a ``vector(dim)`` column. The server URL is read from the environment
variable named by ``rag.pg_url_env`` (default ``TUNEFORGE_PG_URL``), so no password reaches a recipe,
a run folder or ``ps``; every message quoting it is redacted.

Guarantees, matching :class:`~tuneforge.rag.store.LanceStore`:

* every write is one transaction: a delete is committed before ``delete_documents`` returns, and the
  next search from any connection (also through the HNSW index, which honours MVCC visibility) no
  longer sees it;
* concurrent writers on several processes or machines are safe: ``chunk_id`` is the primary key and
  ``add`` upserts in ``chunk_id`` order (no duplicates, no lock-order deadlocks); schema and index
  creation run under an advisory lock;
* search is cosine (``<=>`` with ``vector_cosine_ops``), score = 1 - distance, as LanceDB's here.
  Below ``rag.ann_min_rows`` chunks it is exact; :meth:`optimize` then builds an HNSW index, which
  later inserts keep up to date (``hnsw.ef_search`` = ``rag.ann_ef``, raised to k when k is larger).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tuneforge.errors import UserError
from tuneforge.rag.contract import ChunkRow, DocInfo, Hit, VectorStore
from tuneforge.secrets import redact_text

if TYPE_CHECKING:
    import numpy as np

    from tuneforge.config.rag import RagConfig

COLUMNS = ("chunk_id", "doc_id", "chunk_index", "title", "source", "text", "start_pos", "end_pos", "doc_hash")
SCHEMA_LOCK = 0x7475_6E65  # advisory lock key ("tune") serialising CREATE EXTENSION/TABLE/INDEX
MAX_EF = 1000  # pgvector's upper bound for hnsw.ef_search; larger k falls back to an exact scan


def default_table(index_dir: str | Path) -> str:
    """``rag_`` plus the index folder's name, lower-cased, as a plain SQL identifier."""
    slug = re.sub(r"[^a-z0-9_]+", "_", Path(index_dir).resolve().name.lower()).strip("_") or "index"
    return f"rag_{slug}"[:63]


def url_from_env(env: str) -> str:
    url = os.environ.get(env, "").strip()
    if not url:
        raise UserError(
            f"rag.store is pgvector but ${env} is not set: export {env}=postgresql://USER:PASSWORD@HOST/DB "
            "(or name another variable with rag.pg_url_env)"
        )
    return url


def vector_literal(vector: np.ndarray) -> str:
    """pgvector's text form, ``[0.1,0.2,...]`` (float32 values print exactly with repr)."""
    return "[" + ",".join(map(repr, vector.astype("float32").tolist())) + "]"


def connect(url: str):
    """An autocommit connection (each write opens its own transaction); unreachable -> one-line UserError."""
    try:
        import psycopg
    except ImportError:
        raise UserError("rag.store: pgvector needs psycopg: pip install 'tuneforge[postgres]'") from None

    try:
        return psycopg.connect(url, autocommit=True, connect_timeout=10)
    except psycopg.Error as exc:
        detail = " ".join(str(exc).split())[:300]
        raise UserError(f"cannot reach PostgreSQL at {redact_text(url)}: {redact_text(detail)}") from None


class PgVectorStore(VectorStore):
    """Chunks in one PostgreSQL table with a pgvector column; see the module docstring."""

    def __init__(self, url: str, table: str, dim: int, ann_min_rows: int = 5_000, ef: int = 64):
        from psycopg import sql

        self.url, self.dim, self.ann_min_rows, self.ef = url, dim, ann_min_rows, ef
        self.table = table
        self._t = sql.Identifier(table)
        self._index = sql.Identifier(f"{table[:56]}_hnsw")
        self.conn = connect(url)
        self._ensure_schema()

    # -- schema -----------------------------------------------------------------------------------
    def _database(self) -> str:
        return self.conn.info.dbname

    def _ensure_extension(self) -> None:
        import psycopg

        if self.conn.execute("SELECT 1 FROM pg_extension WHERE extname = 'vector'").fetchone():
            return
        if not self.conn.execute("SELECT 1 FROM pg_available_extensions WHERE name = 'vector'").fetchone():
            raise UserError(
                f"the PostgreSQL server of database {self._database()!r} has no pgvector extension: install it "
                "on the server (Debian/Ubuntu: apt install postgresql-<version>-pgvector; or build "
                "github.com/pgvector/pgvector), then rerun"
            )
        try:
            with self.conn.transaction():
                self.conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
        except psycopg.errors.InsufficientPrivilege:
            raise UserError(
                f"pgvector is installed but not enabled in database {self._database()!r}, and user "
                f"{self.conn.info.user!r} may not enable it: ask a superuser to run "
                f"`CREATE EXTENSION vector;` in {self._database()!r}"
            ) from None

    def _ensure_schema(self) -> None:
        from psycopg import sql

        with self.conn.transaction():
            self.conn.execute("SELECT pg_advisory_xact_lock(%s)", (SCHEMA_LOCK,))
            self._ensure_extension()
            self.conn.execute(sql.SQL(
                "CREATE TABLE IF NOT EXISTS {t} (chunk_id text PRIMARY KEY, doc_id text NOT NULL, "
                "chunk_index integer NOT NULL, title text NOT NULL, source text NOT NULL, text text NOT NULL, "
                "start_pos bigint NOT NULL, end_pos bigint NOT NULL, doc_hash text NOT NULL, "
                "embedding vector({dim}) NOT NULL)"
            ).format(t=self._t, dim=sql.Literal(self.dim)))
            self.conn.execute(sql.SQL("CREATE INDEX IF NOT EXISTS {i} ON {t} (doc_id)").format(
                i=sql.Identifier(f"{self.table[:57]}_doc"), t=self._t))
            have = self.conn.execute(
                "SELECT atttypmod FROM pg_attribute WHERE attrelid = %s::regclass AND attname = 'embedding'",
                (self.table,),
            ).fetchone()[0]
        if have != self.dim:
            raise UserError(f"PostgreSQL table {self.table}: holds {have}-d vectors but the embedder makes "
                            f"{self.dim}-d ones; use another rag.pg_table")

    # -- the contract -----------------------------------------------------------------------------
    def documents(self) -> dict[str, DocInfo]:
        from psycopg import sql

        rows = self.conn.execute(sql.SQL(
            "SELECT doc_id, min(doc_hash), min(title), min(source), count(*) FROM {t} GROUP BY doc_id"
        ).format(t=self._t)).fetchall()
        return {r[0]: DocInfo(r[0], r[1], r[2], r[3], int(r[4])) for r in rows}

    def add(self, rows: list[ChunkRow], vectors: np.ndarray) -> None:
        from psycopg import sql

        if not rows:
            return
        if vectors.shape != (len(rows), self.dim):
            raise ValueError(f"expected {len(rows)}x{self.dim} vectors, got {vectors.shape}")
        cols = sql.SQL(", ").join(map(sql.Identifier, (*COLUMNS, "embedding")))
        updates = sql.SQL(", ").join(
            sql.SQL("{c} = EXCLUDED.{c}").format(c=sql.Identifier(c)) for c in (*COLUMNS[1:], "embedding"))
        with self.conn.transaction(), self.conn.cursor() as cur:
            cur.execute(sql.SQL("CREATE TEMP TABLE tf_staging (LIKE {t}) ON COMMIT DROP").format(t=self._t))
            with cur.copy(sql.SQL("COPY tf_staging ({c}) FROM STDIN").format(c=cols)) as copy:
                for row, vec in zip(rows, vectors, strict=True):
                    copy.write_row((row.chunk_id, row.doc_id, row.chunk_index, row.title, row.source, row.text,
                                    row.start, row.end, row.doc_hash, vector_literal(vec)))
            # Upsert in chunk_id order: two writers of the same chunks neither duplicate them nor deadlock.
            cur.execute(sql.SQL(
                "INSERT INTO {t} ({c}) SELECT {c} FROM tf_staging ORDER BY chunk_id "
                "ON CONFLICT (chunk_id) DO UPDATE SET {u}"
            ).format(t=self._t, c=cols, u=updates))

    def delete_documents(self, doc_ids: list[str]) -> int:
        from psycopg import sql

        if not doc_ids:
            return 0
        with self.conn.transaction():
            cur = self.conn.execute(sql.SQL("DELETE FROM {t} WHERE doc_id = ANY(%s)").format(t=self._t),
                                    (list(doc_ids),))
            return cur.rowcount

    def chunks_of(self, doc_id: str) -> list[ChunkRow]:
        from psycopg import sql

        rows = self.conn.execute(sql.SQL("SELECT {c} FROM {t} WHERE doc_id = %s ORDER BY chunk_index").format(
            c=sql.SQL(", ").join(map(sql.Identifier, COLUMNS)), t=self._t), (doc_id,)).fetchall()
        return [ChunkRow(*r) for r in rows]

    def count(self) -> int:
        from psycopg import sql

        return int(self.conn.execute(sql.SQL("SELECT count(*) FROM {t}").format(t=self._t)).fetchone()[0])

    def _search_sql(self):
        from psycopg import sql

        return sql.SQL(
            "SELECT chunk_id, doc_id, title, source, text, start_pos, end_pos, embedding <=> %(q)s::vector "
            "FROM {t} ORDER BY embedding <=> %(q)s::vector LIMIT %(k)s"
        ).format(t=self._t)

    def _tune(self, k: int) -> None:
        """Per-transaction search settings: ef_search covers k (HNSW returns at most ef_search rows)."""
        self.conn.execute("SELECT set_config('hnsw.ef_search', %s, true)", (str(min(MAX_EF, max(self.ef, k))),))
        if k > MAX_EF:
            self.conn.execute("SELECT set_config('enable_indexscan', 'off', true)")

    def search(self, vector: np.ndarray, k: int) -> list[Hit]:
        with self.conn.transaction():
            self._tune(k)
            rows = self.conn.execute(self._search_sql(), {"q": vector_literal(vector), "k": k}).fetchall()
        return [Hit(r[0], r[1], r[2], r[3], r[4], 1.0 - float(r[7]), int(r[5]), int(r[6])) for r in rows]

    def search_plan(self, vector: np.ndarray, k: int) -> str:
        """PostgreSQL's plan for :meth:`search` (whether it goes through the HNSW index)."""
        from psycopg import sql

        with self.conn.transaction():
            self._tune(k)
            rows = self.conn.execute(sql.SQL("EXPLAIN ") + self._search_sql(),
                                     {"q": vector_literal(vector), "k": k}).fetchall()
        return "\n".join(r[0] for r in rows)

    def has_ann_index(self) -> bool:
        name = f"{self.table[:56]}_hnsw"
        return self.conn.execute("SELECT 1 FROM pg_indexes WHERE indexname = %s", (name,)).fetchone() is not None

    def optimize(self) -> None:
        """Build the HNSW index once the table is big enough, then VACUUM (reclaim deleted rows' space)."""
        from psycopg import sql

        if self.count() >= self.ann_min_rows and not self.has_ann_index():
            with self.conn.transaction():
                self.conn.execute("SELECT pg_advisory_xact_lock(%s)", (SCHEMA_LOCK,))
                # The graph must fit in maintenance_work_mem or the build slows down many times over.
                self.conn.execute("SELECT set_config('maintenance_work_mem', '1GB', true)")
                self.conn.execute(sql.SQL(
                    "CREATE INDEX IF NOT EXISTS {i} ON {t} USING hnsw (embedding vector_cosine_ops)"
                ).format(i=self._index, t=self._t))
        self.conn.execute(sql.SQL("VACUUM (ANALYZE) {t}").format(t=self._t))

    def close(self) -> None:
        self.conn.close()


def open_pgvector(config: RagConfig, meta: dict[str, Any]) -> PgVectorStore:
    """The store an ``index.json`` describes, with the URL from ``config.pg_url_env``."""
    table = meta.get("pg_table") or config.pg_table or default_table(config.index_dir)
    return PgVectorStore(url_from_env(config.pg_url_env), table, int(meta["dim"]),
                         ann_min_rows=config.ann_min_rows, ef=config.ann_ef)
