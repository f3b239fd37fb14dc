"""Drift: how far the tuned model's next-token distributions moved from the base model's on general input.

For every position of every input (Wikipedia prose, whole conversations) both models predict the next
token; drift is the mean KL divergence KL(base || tuned) in nats per token: the extra loss the tuned
model pays, on average, to predict what the base model would say. It is 0 for an unchanged model and
grows with any change, helpful or not, so it needs no labels and works at every model size, even where
the multiple-choice probes sit at chance.

The base side is kept as its top ``k`` tokens per position (log-probabilities and ids) rather than a
second model in memory: KL is then taken over those ``k`` tokens plus one bucket for all the others,
which is a lower bound of the full KL (merging outcomes never increases it) and equal to it when
``k`` covers the vocabulary. KL(base || tuned) weighs positions by the base model's probabilities, so
the base model's top tokens carry almost all of it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from tqdm.auto import tqdm

from tuneforge.eval.general_data import GeneralInput
from tuneforge.eval.loglik import bos_prefix, with_bos

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

BATCH = 8  # sequences per forward pass: full logits are batch x length x vocabulary floats


def encode(tokenizer: PreTrainedTokenizerBase, inputs: list[GeneralInput], max_tokens: int) -> list[list[int]]:
    """Token ids of each input: plain text as it is, conversations through the chat template."""
    out, bos = [], bos_prefix(tokenizer)
    for x in inputs:
        if x.messages is not None and tokenizer.chat_template:
            text = tokenizer.apply_chat_template(x.messages, tokenize=False)
        elif x.messages is not None:
            text = "\n".join(f"{m['role']}: {m['content']}" for m in x.messages)
        else:
            text = x.text or ""
        out.append(with_bos(tokenizer(text, add_special_tokens=False)["input_ids"], bos)[:max_tokens])
    return out


@dataclass
class DriftReference:
    """The base model's top-k next-token log-probabilities at every position of every input."""

    ids: list[str]
    tokens: list[list[int]]
    top_logp: list[Any] = field(default_factory=list)  # per input: float32 tensor [positions, k]
    top_ids: list[Any] = field(default_factory=list)  # per input: int64 tensor [positions, k]


def _batches(tokens: list[list[int]], batch: int, max_tokens: int | None = None,
             max_positions: int | None = None) -> list[list[int]]:
    """Rows per forward pass: ``batch`` rows, ``max_tokens`` padded tokens, and at most ``max_positions``
    rows x positions of logits (every position is scored)."""
    from tuneforge.eval.batching import split_by_positions, token_batches

    lengths = [len(t) for t in tokens]
    return [part for b in token_batches(lengths, batch, max_tokens) for part in split_by_positions(b, lengths, max_positions)]


def _positions(model: PreTrainedModel) -> int | None:
    from tuneforge.eval.batching import logit_positions, vocab_size

    return logit_positions(vocab_size(model))


def _next_token_logits(model: PreTrainedModel, tokens: list[list[int]], idx: list[int], pad: int):
    """Logits [batch, width-1, vocab] (right-padded rows; row r is valid up to len-1). Callers take the
    log-softmax one row at a time (``_row_logprobs``): a second whole-batch tensor would double the peak."""
    import torch

    width = max(len(tokens[i]) for i in idx)
    ids = torch.full((len(idx), width), pad, dtype=torch.long)
    mask = torch.zeros((len(idx), width), dtype=torch.long)
    for r, i in enumerate(idx):
        ids[r, : len(tokens[i])] = torch.tensor(tokens[i])
        mask[r, : len(tokens[i])] = 1
    with torch.inference_mode():
        out = model(input_ids=ids.to(model.device), attention_mask=mask.to(model.device), use_cache=False)
        return out.logits[:, :-1, :]


def _row_logprobs(logits, row: int, length: int):
    """Next-token log-probabilities [length-1, vocab] of one row of ``_next_token_logits``."""
    import torch

    with torch.inference_mode():
        return torch.log_softmax(logits[row, : length - 1].float(), dim=-1)


def reference(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, inputs: list[GeneralInput],
              max_tokens: int = 128, top_k: int = 256, desc: str = "drift reference",
              max_batch_tokens: int | None = None) -> DriftReference:
    """Record the base model's top-k next-token distribution on every input (batches of ``BATCH`` inputs,
    at most ``max_batch_tokens`` padded tokens and ``batching.LOGIT_BYTES`` of fp32 logits; ``kl_per_input``
    must be given the same cap)."""
    tokens = [t for t in encode(tokenizer, inputs, max_tokens)]
    keep = [i for i, t in enumerate(tokens) if len(t) >= 2]
    ref = DriftReference([inputs[i].id for i in keep], [tokens[i] for i in keep])
    ref.top_logp, ref.top_ids = [None] * len(keep), [None] * len(keep)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    batches = _batches(ref.tokens, BATCH, max_batch_tokens, _positions(model))
    for idx in tqdm(batches, desc=desc, disable=len(keep) < 2 * BATCH):
        logits = _next_token_logits(model, ref.tokens, idx, pad)
        k = min(top_k, logits.shape[-1])
        for r, i in enumerate(idx):
            vals, ids = _row_logprobs(logits, r, len(ref.tokens[i])).topk(k, dim=-1)
            ref.top_logp[i], ref.top_ids[i] = vals.clone(), ids.clone()
        del logits
    return ref


def kl_per_input(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, ref: DriftReference,
                 desc: str = "drift", max_batch_tokens: int | None = None) -> list[float]:
    """Mean KL(base || model) per token, one value per reference input (same inputs, same batches)."""
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    out = [0.0] * len(ref.tokens)
    batches = _batches(ref.tokens, BATCH, max_batch_tokens, _positions(model))
    for idx in tqdm(batches, desc=desc, disable=len(ref.tokens) < 2 * BATCH):
        logits = _next_token_logits(model, ref.tokens, idx, pad)
        for r, i in enumerate(idx):
            logp = _row_logprobs(logits, r, len(ref.tokens[i]))
            lb = ref.top_logp[i].double()
            lt = logp.gather(-1, ref.top_ids[i].to(logp.device)).double().cpu()
            out[i] = float(_coarse_kl(lb, lt).mean().clamp(min=0.0))
        del logits
    return out


def _coarse_kl(lb, lt):
    """KL over the kept tokens plus one bucket for the rest, per position ([positions, k] log-probs)."""
    import torch

    pb = lb.exp()
    rest_b = (1 - pb.sum(-1)).clamp(min=0.0)
    rest_t = (1 - lt.exp().sum(-1)).clamp(min=1e-12)
    kept = (pb * (lb - lt)).sum(-1)
    tail = torch.where(rest_b > 1e-12, rest_b * (rest_b.clamp(min=1e-12).log() - rest_t.log()), torch.zeros_like(rest_b))
    return kept + tail
