"""Evaluation batches bounded by tokens as well as rows.

A batch's memory (activations, attention scores, KV cache, logits) grows with rows x padded length, not
with the row count: 16 short reviews and 16 few-shot prompts of 1,500 tokens differ a hundredfold. Rows
are taken longest first (so each batch pads little, as before) and a batch closes when one more row
would pass ``max_tokens`` padded tokens or ``max_rows`` rows; a single row over the cap is a batch of
its own. When the token cap does not bind, the batches are exactly the fixed-size ones of before.
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
