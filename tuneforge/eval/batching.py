"""Evaluation batches bounded by tokens as well as rows.

A batch's memory (activations, attention scores, KV cache, logits) grows with rows x padded length, not
with the row count: 16 short reviews and 16 few-shot prompts of 1,500 tokens differ a hundredfold. Rows
are taken longest first (so each batch pads little, as before) and a batch closes when one more row
would pass ``max_tokens`` padded tokens or ``max_rows`` rows; a single row over the cap is a batch of
its own. When the token cap does not bind, the batches are exactly the fixed-size ones of before.
Scoring batches (log-likelihood, drift) are also cut so that their fp32 logits stay within ``LOGIT_BYTES``.
"""

from __future__ import annotations


def token_batches(lengths: list[int], max_rows: int, max_tokens: int | None = None,
                  extra: int = 0) -> list[list[int]]:
    """Indices into ``lengths``, longest first, cut into batches of at most ``max_rows`` rows and
    ``max_tokens`` padded tokens: rows x (the batch's longest length + ``extra``, e.g. the tokens a
    generation adds)."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    batches: list[list[int]] = []
    current: list[int] = []
    for i in order:
        if current:
            width = lengths[current[0]] + extra  # the first row is the batch's longest
            if len(current) >= max_rows or (max_tokens and (len(current) + 1) * width > max_tokens):
                batches.append(current)
                current = []
        current.append(i)
    if current:
        batches.append(current)
    return batches


# fp32 logits one scoring batch may hold: rows x scored positions x vocabulary x 4 bytes. A token cap alone
# does not bound them: 4,096 positions of SmolLM2's 49,152-entry vocabulary are 0.8 GB of logits (and their
# log-softmax as much again), of Gemma 3's 262,144 entries 4.3 GB. 64 MiB is 341 positions of SmolLM2's
# vocabulary, 64 of Gemma 3's; a batch of that many positions still runs the decoder at full speed on a CPU.
LOGIT_BYTES = 64 * 2**20


def logit_positions(vocab: int, max_bytes: int | None = None) -> int | None:
    """Scored positions (rows x positions per row) whose fp32 logits fit in ``max_bytes`` (default
    ``LOGIT_BYTES``); None (no bound) for an unknown vocabulary (0)."""
    return max(1, (max_bytes or LOGIT_BYTES) // (4 * vocab)) if vocab > 0 else None


def vocab_size(model) -> int:
    """Entries of the model's output head (what one position's logits hold); 0 when the model does not say
    (a stand-in without a head or config): then only the rows and tokens bound the batch."""
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    weight = getattr(head, "weight", None)
    if weight is not None:
        return int(weight.shape[0])
    return int(getattr(getattr(model, "config", None), "vocab_size", 0) or 0)


def split_by_positions(batch: list[int], positions: list[int], max_positions: int | None) -> list[list[int]]:
    """``batch`` (indices, in order) cut into consecutive parts whose rows x widest ``positions[i]`` stays
    within ``max_positions`` (a row over it on its own): the logits of each part fit the byte bound."""
    if max_positions is None:
        return [batch]
    parts: list[list[int]] = []
    current: list[int] = []
    widest = 0
    for i in batch:
        w = max(widest, positions[i])
        if current and (len(current) + 1) * w > max_positions:
            parts.append(current)
            current, w = [], positions[i]
        current.append(i)
        widest = w
    if current:
        parts.append(current)
    return parts
