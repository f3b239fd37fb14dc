"""Grounded answers: retrieve top-k chunks, number them in the prompt, generate, and report citations.

The prompt asks the model to answer only from the numbered sources and to cite them as ``[n]``. The
sources a model cites are parsed back out of its answer; a small model often cites nothing, so the
answer also carries every retrieved source (what it was shown), and the CLI prints both.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

    from tuneforge.rag.embed import Embedder
    from tuneforge.rag.store import Hit, VectorStore

SYSTEM_PROMPT = (
    "You answer questions using only the numbered sources given. Answer briefly, in one or two "
    "sentences, and cite the sources you use in square brackets, like [1]. If the sources do not "
    "contain the answer, say that you do not know."
)

_CITATION = re.compile(r"\[(\d+(?:\s*,\s*\d+)*)\]")


@dataclass
class RagAnswer:
    question: str
    answer: str
    hits: list[Hit]
    cited: list[int] = field(default_factory=list)  # 1-based source numbers the answer cites

    @property
    def cited_hits(self) -> list[Hit]:
        return [self.hits[i - 1] for i in self.cited]


def retrieve(store: VectorStore, embedder: Embedder, question: str, k: int) -> list[Hit]:
    """The k chunks nearest to the question, best first."""
    return store.search(embedder.embed_query(question), k)


def format_sources(hits: list[Hit], tokenizer: PreTrainedTokenizerBase, max_tokens: int) -> str:
    """Numbered sources, best first, cut to ``max_tokens`` model tokens (the lowest-ranked go first)."""
    parts: list[str] = []
    used = 0
    for i, hit in enumerate(hits, 1):
        block = f"[{i}] {hit.title}\n{hit.text.strip()}"
        n = len(tokenizer(block, add_special_tokens=False)["input_ids"])
        if used + n > max_tokens:
            if not parts:  # always show the best source, truncated to fit
                ids = tokenizer(block, add_special_tokens=False)["input_ids"][:max_tokens]
                parts.append(tokenizer.decode(ids))
            break
        parts.append(block)
        used += n
    return "\n\n".join(parts)


def build_messages(
    question: str, hits: list[Hit], tokenizer: PreTrainedTokenizerBase, max_context_tokens: int
) -> list[dict[str, str]]:
    """The chat conversation that asks for a grounded, cited answer."""
    sources = format_sources(hits, tokenizer, max_context_tokens)
    return [
        {"role": "system", "content": SYSTEM_PROMPT},
        {"role": "user", "content": f"Sources:\n\n{sources}\n\nQuestion: {question}\nAnswer briefly, citing sources like [1]."},
    ]


def parse_citations(answer: str, n_sources: int) -> list[int]:
    """Source numbers cited as [n] or [n, m] in the answer, in first-cited order, valid ones only."""
    seen: list[int] = []
    for m in _CITATION.finditer(answer):
        for part in m.group(1).split(","):
            i = int(part)
            if 1 <= i <= n_sources and i not in seen:
                seen.append(i)
    return seen


def generate_answers(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    conversations: list[list[dict[str, str]]],
    max_new_tokens: int,
    batch_size: int = 8,
) -> list[str]:
    """Greedy answers for many conversations, batched with left padding.

    Uses the evaluation stage's ``generate_batch`` when it is available so RAG rows and eval rows are
    generated the same way; otherwise a minimal batched greedy loop.
    """
    try:
        from tuneforge.eval.generation import generate_batch  # type: ignore[import-not-found]
    except ImportError:
        generate_batch = None
    if generate_batch is not None:
        return list(generate_batch(model, tokenizer, conversations, max_new_tokens=max_new_tokens, batch_size=batch_size))
    import torch

    answers: list[str] = []
    side = tokenizer.padding_side
    tokenizer.padding_side = "left"  # generation continues from the right edge of every row
    try:
        for start in range(0, len(conversations), batch_size):
            batch = conversations[start:start + batch_size]
            texts = [tokenizer.apply_chat_template(c, add_generation_prompt=True, tokenize=False) for c in batch]
            enc = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(model.device)
            with torch.inference_mode():
                out = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False,
                                     pad_token_id=tokenizer.pad_token_id)
            new = out[:, enc["input_ids"].shape[1]:]
            answers += [t.strip() for t in tokenizer.batch_decode(new, skip_special_tokens=True)]
    finally:
        tokenizer.padding_side = side
    return answers


def answer_question(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    store: VectorStore,
    embedder: Embedder,
    question: str,
    k: int = 4,
    max_new_tokens: int = 128,
    max_context_tokens: int = 1024,
) -> RagAnswer:
    """Retrieve, generate a grounded answer, and parse which sources it cites."""
    hits = retrieve(store, embedder, question, k)
    messages = build_messages(question, hits, tokenizer, max_context_tokens)
    text = generate_answers(model, tokenizer, [messages], max_new_tokens, batch_size=1)[0]
    return RagAnswer(question, text, hits, parse_citations(text, len(hits)))
