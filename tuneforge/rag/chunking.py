"""Token-aware chunking with overlap.

Chunks are windows of the *embedder's* tokens (what the embedder truncates is what matters), cut back
to character offsets so that a chunk's text is an exact slice of the document: citations and gold
spans can be matched against it. Window ends are pulled back to a paragraph, line or sentence break
when one sits in the last quarter of the window, so chunks rarely cut a sentence in half.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from tuneforge.errors import UserError

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

    from tuneforge.rag.documents import Document

_BREAK = re.compile(r"\n\s*\n|\n|(?<=[.!?])\s")


@dataclass
class Chunk:
    chunk_id: str
    doc_id: str
    index: int
    text: str
    start: int  # character offsets into the document text
    end: int


def _break_before(text: str, start: int, end: int) -> int | None:
    """Character position of the last natural break in text[start:end], if it is in the last quarter."""
    window = text[start:end]
    best = None
    for m in _BREAK.finditer(window):
        best = m.end()
    if best is not None and best >= 0.75 * len(window):
        return start + best
    return None


def chunk_document(
    doc: Document, tokenizer: PreTrainedTokenizerBase, chunk_tokens: int, overlap: int
) -> list[Chunk]:
    """Split one document into overlapping chunks of at most ``chunk_tokens`` embedder tokens."""
    if overlap >= chunk_tokens:
        raise UserError(f"rag.chunk_overlap ({overlap}) must be smaller than rag.chunk_tokens ({chunk_tokens})")
    enc = tokenizer(doc.text, add_special_tokens=False, return_offsets_mapping=True, verbose=False)
    offsets = [(s, e) for s, e in enc["offset_mapping"] if e > s]
    if not offsets:
        return []
    chunks: list[Chunk] = []
    i = 0
    while i < len(offsets):
        j = min(i + chunk_tokens, len(offsets))
        start = offsets[i][0]
        end = offsets[j - 1][1]
        if j < len(offsets):
            cut = _break_before(doc.text, start, end)
            if cut is not None:
                # Keep only the tokens that end before the break.
                k = j
                while k > i + 1 and offsets[k - 1][1] > cut:
                    k -= 1
                j, end = k, offsets[k - 1][1]
        raw = doc.text[start:end]
        text = raw.strip()
        if text:
            # Offsets of the stripped text, so that text == doc.text[start:end] holds exactly.
            s = start + len(raw) - len(raw.lstrip())
            chunks.append(Chunk(f"{doc.doc_id}#{len(chunks)}", doc.doc_id, len(chunks), text, s, s + len(text)))
        if j >= len(offsets):
            break
        i = max(j - overlap, i + 1)
    return chunks
