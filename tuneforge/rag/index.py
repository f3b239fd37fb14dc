"""Ingest documents into a store: chunk, embed in batches, and replace what changed.

A document whose id is already in the store with the same content hash is skipped; one whose text
changed has all its old chunks deleted before the new ones are added, so a shrunken document leaves no
stale chunk behind.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from tqdm.auto import tqdm

from tuneforge.rag.chunking import Chunk, chunk_document
from tuneforge.rag.store import ChunkRow

if TYPE_CHECKING:
    from tuneforge.rag.documents import Document
    from tuneforge.rag.embed import Embedder
    from tuneforge.rag.store import VectorStore

log = logging.getLogger(__name__)

GROUP = 4096  # chunks embedded and written per step: bounded memory, and progress survives a crash


@dataclass
class IndexReport:
    added: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    chunks_written: int = 0
    total_chunks: int = 0
    seconds: float = 0.0

    @property
    def chunks_per_second(self) -> float:
        return self.chunks_written / self.seconds if self.seconds > 0 else 0.0

    def summary(self) -> str:
        return (
            f"{len(self.added)} added, {len(self.updated)} updated, {len(self.unchanged)} unchanged"
            + (f", {len(self.removed)} removed" if self.removed else "") + " documents; "
            f"{self.chunks_written} chunks written in {self.seconds:.1f}s "
            f"({self.chunks_per_second:.0f} chunks/s); the index holds {self.total_chunks} chunks"
        )


def embedding_text(title: str, chunk: Chunk) -> str:
    """What the embedder sees: the chunk, prefixed with its document title when the chunk lacks it.

    A chunk from the middle of "The try statement" rarely says "try" itself; the title puts it back.
    """
    if title and not chunk.text.startswith(title):
        return f"{title}\n{chunk.text}"
    return chunk.text


def index_documents(
    store: VectorStore,
    embedder: Embedder,
    docs: list[Document],
    chunk_tokens: int,
    chunk_overlap: int,
    progress: bool = True,
    prune_prefixes: list[str] | None = None,
) -> IndexReport:
    """Bring the store up to date with ``docs``; return what was added, updated and skipped.

    ``prune_prefixes``: documents whose id starts with one of these but that are not in ``docs`` are
    deleted (a file removed from an indexed folder disappears from the index too).
    """
    started = time.perf_counter()
    report = IndexReport()
    known = store.documents()
    todo: list[Document] = []
    for doc in docs:
        info = known.get(doc.doc_id)
        if info is not None and info.doc_hash == doc.content_hash:
            report.unchanged.append(doc.doc_id)
            continue
        (report.updated if info is not None else report.added).append(doc.doc_id)
        todo.append(doc)
    if prune_prefixes:
        present = {d.doc_id for d in docs}
        report.removed = sorted(d for d in known if d not in present and any(d.startswith(p) for p in prune_prefixes))
    if report.updated or report.removed:
        store.delete_documents(report.updated + report.removed)
    size = min(chunk_tokens, embedder.max_tokens)
    rows: list[ChunkRow] = []
    texts: list[str] = []
    for doc in tqdm(todo, desc="chunking", unit="doc", disable=not progress or len(todo) < 50):
        h = doc.content_hash
        for c in chunk_document(doc, embedder.tokenizer, size, chunk_overlap):
            rows.append(ChunkRow(c.chunk_id, doc.doc_id, c.index, doc.title, doc.source, c.text, c.start, c.end, h))
            texts.append(embedding_text(doc.title, c))
    bar = tqdm(total=len(rows), desc="embedding", unit="chunk", disable=not progress or not rows)
    import numpy as np

    step = embedder.batch_size
    for start in range(0, len(rows), GROUP):
        parts = []
        for b in range(start, min(start + GROUP, len(rows)), step):
            parts.append(embedder.embed(texts[b:b + step]))
            bar.update(len(parts[-1]))
        store.add(rows[start:start + GROUP], np.concatenate(parts))
    bar.close()
    report.chunks_written = len(rows)
    if todo or report.removed:
        store.optimize()
    report.total_chunks = store.count()
    report.seconds = time.perf_counter() - started
    log.info("indexed: %s", report.summary())
    return report
