"""The ``rag`` section of a recipe."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from tuneforge.config.base import Section


class RagConfig(Section):
    """Retrieval-augmented generation: index location, embedder, chunking, retrieval and answers."""

    index_dir: str = Field("runs/rag-index", description="Folder of the persistent vector store.")
    store: Literal["lancedb", "pgvector"] = Field(
        "lancedb",
        description="Vector store backend. lancedb: embedded, on disk, no server (see README for why); "
        "pgvector: a table in a PostgreSQL server with the pgvector extension (URL from rag.pg_url_env).",
    )
    pg_url_env: str = Field(
        "TUNEFORGE_PG_URL",
        pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
        description="pgvector: the environment variable holding the PostgreSQL URL "
        "(postgresql://user:password@host/db), so no password reaches a recipe, a run folder or `ps`.",
    )
    pg_table: str | None = Field(
        None,
        pattern=r"^[a-z_][a-z0-9_]{0,62}$",
        description="pgvector: the table holding this index's chunks (default: rag_ plus the index "
        "folder's name). One table per index; several machines may share one.",
    )
    embedding_model: str = Field(
        "all-minilm-l6-v2", description="Bundled embedder name or a local sentence-transformers folder."
    )
    embedding_batch_size: int = Field(64, ge=1, description="Chunks embedded per batch while indexing.")
    chunk_tokens: int = Field(
        200, ge=16, description="Chunk size in embedder tokens (capped at the embedder's max sequence length)."
    )
    chunk_overlap: int = Field(32, ge=0, description="Tokens shared by consecutive chunks.")
    write_wait_s: float = Field(
        600.0, ge=0, description="rag index/delete: one process writes an index at a time; wait this many "
        "seconds for another writer to finish, then give up (0: refuse at once).",
    )
    prune: bool = Field(
        False, description="rag index: delete indexed documents of a given folder (or JSONL file, or bundled "
        "set) that are no longer there."
    )
    top_k: int = Field(4, ge=1, description="Chunks retrieved per question.")
    ann_min_rows: int = Field(
        5_000,
        ge=256,
        description="Build an approximate (IVF-HNSW) index once the store holds this many chunks; "
        "below it, search is exact and already fast.",
    )
    ann_ef: int = Field(64, ge=1, description="HNSW search breadth with an ANN index (higher: better recall, slower).")
    ann_nprobes: int = Field(20, ge=1, description="IVF partitions searched with an ANN index.")
    max_context_tokens: int = Field(
        1024, ge=64, description="Most model tokens of retrieved text put in the prompt (lowest-ranked chunks cut first)."
    )
    max_new_tokens: int = Field(128, ge=1, description="Tokens generated per answer.")
    batch_size: int = Field(8, ge=1, description="Questions answered per generation batch in `rag eval`.")
    qa_file: str = Field(
        "pydoc-topics",
        description="QA pairs for `rag eval`: a bundled set name (pydoc-topics) or a JSONL file with "
        "question, answer, doc_id and gold (the answer-bearing span of the document).",
    )
    max_questions: int | None = Field(None, ge=1, description="Evaluate at most this many QA pairs.")
    closed_book: bool = Field(
        True, description="rag eval: also answer the questions without retrieval (rows 'base zero-shot'/'tuned')."
    )
    answer_mode: Literal["generate", "retrieval-only"] = Field(
        "generate", description="rag eval: retrieval-only skips answer generation (recall@k and MRR only)."
    )
