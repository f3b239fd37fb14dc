from __future__ import annotations

import pytest

from tuneforge.errors import UserError
from tuneforge.rag.chunking import chunk_document
from tuneforge.rag.documents import Document

from .conftest import topic


@pytest.fixture(scope="module")
def doc():
    return Document(doc_id="pydoc-topics/return", text=topic("return") + "\n\n" + topic("raise"), title="return")


def test_chunks_are_exact_slices_within_the_token_budget(embedder, doc):
    tok = embedder.tokenizer
    chunks = chunk_document(doc, tok, 48, 12)
    assert len(chunks) > 3
    for i, c in enumerate(chunks):
        assert c.chunk_id == f"{doc.doc_id}#{i}" and c.index == i
        assert doc.text[c.start:c.end] == c.text
        assert len(tok(c.text, add_special_tokens=False)["input_ids"]) <= 48
    # Nothing is lost: every non-space character of the document lies in some chunk.
    covered = set()
    for c in chunks:
        covered.update(range(c.start, c.end))
    assert all(i in covered for i, ch in enumerate(doc.text) if not ch.isspace())


def test_consecutive_chunks_overlap(embedder, doc):
    chunks = chunk_document(doc, embedder.tokenizer, 48, 12)
    for a, b in zip(chunks, chunks[1:], strict=False):
        assert b.start < a.end, "consecutive chunks share text"
    no_overlap = chunk_document(doc, embedder.tokenizer, 48, 0)
    assert len(no_overlap) < len(chunks)


def test_overlap_must_be_smaller_than_chunk(embedder, doc):
    with pytest.raises(UserError, match="chunk_overlap"):
        chunk_document(doc, embedder.tokenizer, 32, 32)
