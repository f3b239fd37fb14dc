"""Log-likelihood of continuations given contexts, batched: multiple-choice probes and reference loss.

Context and continuation are tokenized separately and concatenated, so the continuation's tokens are
exactly its own (no merge across the boundary). Rows are left-padded so every continuation ends the row,
which lets the model compute logits for the tail only (``logits_to_keep``) instead of a
batch x length x vocabulary tensor.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from tqdm.auto import tqdm

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase


@dataclass
class Score:
    logprob: float  # sum of log-probabilities of the continuation's tokens
    tokens: int  # how many tokens the continuation has
    greedy: bool  # every continuation token was the model's top choice


def bos_prefix(tokenizer: PreTrainedTokenizerBase) -> list[int]:
    """The token the tokenizer puts before any text on its own: ``[bos]`` for Gemma and Llama, nothing for
    GPT-2-style tokenizers such as SmolLM2's. A model trained with it scores text without it badly (Gemma 3
    all but requires it), so plain-text contexts get it; chat-templated ones already start with it."""
    ids = list(tokenizer("", add_special_tokens=True)["input_ids"])
    return ids if ids and ids == [tokenizer.bos_token_id] else []


def with_bos(ids: list[int], prefix: list[int]) -> list[int]:
    return ids if not prefix or ids[: len(prefix)] == prefix else prefix + ids


def score_continuations(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    pairs: list[tuple[str, str]],
    batch_size: int = 16,
    max_length: int = 2048,
    desc: str = "scoring",
    progress: bool = True,
    max_batch_tokens: int | None = None,
    logit_bytes: int | None = None,
) -> list[Score]:
    """Score each ``(context, continuation)`` pair under the model, ``batch_size`` pairs and at most
    ``max_batch_tokens`` padded tokens at a time, and few enough that the batch's fp32 logits (rows x
    scored positions x vocabulary) stay within ``logit_bytes``."""
    import torch

    from tuneforge.eval.batching import logit_positions, split_by_positions, token_batches, vocab_size

    encoded = []
    bos = bos_prefix(tokenizer)
    for ctx, cont in pairs:
        c = with_bos(tokenizer(ctx, add_special_tokens=False)["input_ids"] if ctx else [], bos)
        t = tokenizer(cont, add_special_tokens=False)["input_ids"]
        if not t:
            raise ValueError(f"empty continuation for context {ctx[-40:]!r}")
        ids = (c + t)[-max_length:]  # keep the continuation, drop the oldest context if too long
        encoded.append((ids, min(len(t), len(ids) - 1)))
    batches = token_batches([len(ids) for ids, _ in encoded], batch_size, max_batch_tokens)
    # logits_to_keep scores the widest continuation (+1) of every row: that, not the row, sizes the logits
    scored = [n + 1 for _, n in encoded]
    cap = logit_positions(vocab_size(model), logit_bytes)
    batches = [part for b in batches for part in split_by_positions(b, scored, cap)]
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    results: list[Score | None] = [None] * len(encoded)
    bar = tqdm(total=len(encoded), desc=desc, unit="seq", disable=not progress or len(encoded) < 2)
    for idx in batches:
        width = max(len(encoded[i][0]) for i in idx)
        keep = max(encoded[i][1] for i in idx) + 1
        ids = torch.full((len(idx), width), pad, dtype=torch.long)
        mask = torch.zeros((len(idx), width), dtype=torch.long)
        for r, i in enumerate(idx):
            seq = encoded[i][0]
            ids[r, width - len(seq) :] = torch.tensor(seq)
            mask[r, width - len(seq) :] = 1
        pos = (mask.cumsum(-1) - 1).clamp(min=0)
        inputs = {"input_ids": ids.to(model.device), "attention_mask": mask.to(model.device),
                  "position_ids": pos.to(model.device)}
        with torch.inference_mode():
            try:  # the tail's logits only, and no KV cache (nothing follows this pass)
                out = model(**inputs, logits_to_keep=keep, use_cache=False)
            except TypeError:  # a model without those arguments: full logits, then the tail
                out = model(**inputs)
            logits = out.logits[:, -keep:, :]
            del out
            # logits at position j predict token j+1: the tail's last `n` predictions cover the continuation.
            # One row's log-softmax at a time: a second [rows, keep, vocab] tensor would double the peak.
            for r, i in enumerate(idx):
                seq, n = encoded[i]
                target = torch.tensor(seq[-n:], device=logits.device)
                lp = torch.log_softmax(logits[r, keep - 1 - n : keep - 1, :].float(), dim=-1)
                tok_lp = lp.gather(-1, target[:, None]).squeeze(-1)
                greedy = bool((lp.argmax(-1) == target).all())
                results[i] = Score(logprob=float(tok_lp.sum()), tokens=n, greedy=greedy)
            del logits
        bar.update(len(idx))
    bar.close()
    return [r for r in results if r is not None]
