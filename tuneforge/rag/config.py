"""The ``rag`` section of a recipe."""

from __future__ import annotations

from pydantic import Field

from tuneforge.config.base import Section


class RagConfig(Section):
    """Retrieval-augmented generation: index location, embedder and retrieval."""

    index_dir: str = Field("runs/rag-index", description="Folder of the persistent vector store.")
    embedding_model: str = Field("all-minilm-l6-v2", description="Bundled embedder name or a local sentence-transformers folder.")
    chunk_tokens: int = Field(256, ge=16, description="Chunk size in embedder tokens.")
    chunk_overlap: int = Field(32, ge=0, description="Tokens shared by consecutive chunks.")
    top_k: int = Field(4, ge=1, description="Chunks retrieved per question.")
