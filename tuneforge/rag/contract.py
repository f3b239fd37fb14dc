"""The vector store contract: what the indexer, retriever and CLI need from any store.

:class:`VectorStore` is the whole interface; :mod:`tuneforge.rag.store` implements it on LanceDB
(embedded, the default) and :mod:`tuneforge.rag.pgvector_store` on PostgreSQL + pgvector. The contract
tests (tests/rag/test_store.py) run against both.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np


@dataclass
class Hit:
    chunk_id: str
    doc_id: str
    title: str
    source: str
    text: str
    score: float  # cosine similarity, higher is closer
    start: int = 0
    end: int = 0


@dataclass
class ChunkRow:
    chunk_id: str
    doc_id: str
    chunk_index: int
    title: str
    source: str
    text: str
    start: int
    end: int
    doc_hash: str


@dataclass
class DocInfo:
    doc_id: str
    doc_hash: str
    title: str
    source: str
    chunks: int


class VectorStore(ABC):
    """What the indexer, retriever and CLI need from a vector store."""

    @abstractmethod
    def documents(self) -> dict[str, DocInfo]:
        """Every document held, by id."""

    @abstractmethod
    def add(self, rows: list[ChunkRow], vectors: np.ndarray) -> None:
        """Append chunks (the caller deletes a document's old chunks first)."""

    @abstractmethod
    def delete_documents(self, doc_ids: list[str]) -> int:
        """Remove every chunk of these documents, durably; return how many chunks went."""

    @abstractmethod
    def chunks_of(self, doc_id: str) -> list[ChunkRow]:
        """Every chunk of one document, in order (without vectors)."""

    @abstractmethod
    def search(self, vector: np.ndarray, k: int) -> list[Hit]:
        """The k chunks nearest to ``vector``, best first."""

    @abstractmethod
    def count(self) -> int:
        """Number of chunks held."""

    def optimize(self) -> None:  # noqa: B027 - optional for backends that maintain themselves
        """Compact storage and bring ANN indexes up to date after writes (optional)."""
