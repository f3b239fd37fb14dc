"""How often a served variant of a model (int8, bfloat16) picks its reference's greedy token on real answers."""

from __future__ import annotations

import torch

ASKS = ("What is the capital of France?", "Give me three tips for better sleep.")


def top1_agreement(reference, variant, tokenizer, asks=ASKS, new_tokens: int = 24) -> tuple[int, int]:
    """(positions where ``variant``'s top-1 token equals ``reference``'s, positions), over each chat prompt
    followed by ``reference``'s own greedy answer: one early flip does not count for every later position."""
    agree = total = 0
    for ask in asks:
        text = tokenizer.apply_chat_template([{"role": "user", "content": ask}], add_generation_prompt=True,
                                             tokenize=False)
        ids = torch.tensor([tokenizer(text, add_special_tokens=False)["input_ids"]])
        with torch.inference_mode():
            seq = reference.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=new_tokens,
                                     do_sample=False)
            a, b = reference(seq).logits.argmax(-1), variant(seq).logits.argmax(-1)
        agree += int((a == b).sum())
        total += a.numel()
    return agree, total
