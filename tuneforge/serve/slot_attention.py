"""Attention for a mixed forward: each token of one flat sequence attends to its own cache slot only.

In a mixed forward (``SlotCache.plan_mixed``) the batch is one flat sequence: the running rows' next
tokens and the new rows' prompt tokens, each belonging to its own slot of the KV cache. Seen as one
sequence, every token would attend over every slot's columns (the rest masked): at 32 rows that was
40% of the step (``bench.serve_steps``: a join cost 526 ms instead of 130 at 8 rows). Here each
token gathers its own slot's keys and values and attends over those ``width`` columns only.

The function is registered with transformers' ``AttentionInterface`` and the serving model uses it for
every forward; outside a mixed forward (no plan set in :data:`PLAN`) it is transformers' SDPA attention,
except for a decoding step of many rows in bfloat16 or float16: one query per row over its slot is then
two batched matmuls and a softmax (:func:`_one_token_rows`), as transformers' eager attention computes it.
PyTorch's CPU flash kernel is slow there in half precision (a bf16 step of 32 rows spent 36 of its 121 ms
in it, profiled in the engine; the matmuls take 0.6x as long, see ``MATMUL_MIN_ROWS``); in float32 it is
as fast and stays. Only model types whose attention is plain scaled dot-product over the cache (no logit
soft-capping, no sliding window of their own) use it: for the others :func:`install` returns False and
the engine prefills joining rows apart, as before.
"""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # torch is imported where attention runs, not when the server module loads
    import torch

NAME = "tuneforge_slots"


@dataclass(frozen=True)
class MixedPlan:
    """Where each token of a mixed forward belongs: tokens ``0..running-1`` are the running rows' (slot i,
    one token each), then each joining row's tokens ``first..end-1`` belong to its ``slot``."""

    running: int
    joining: tuple[tuple[int, int, int], ...]  # (slot, first token, end token)


# The plan of the mixed forward running now, set by the scheduler around that forward.
PLAN: ContextVar[MixedPlan | None] = ContextVar("tuneforge_mixed_plan", default=None)
# Decoding steps of at least this many rows in half precision attend through two matmuls, not the CPU flash
# kernel (``python -m bench.serve_attention``, one Zen 4 thread, bf16): per layer at 92 columns kernel vs
# matmuls 631 vs 382 us at 32 rows, 309 vs 228 at 16, 157 vs 151 at 8, 34 vs 172 at one row; whole engine
# steps x1.11-1.17 at 32 rows, x1.10 at 24, x0.98-1.04 at 16 and x0.98 at 8.
MATMUL_MIN_ROWS = 16
PLAIN_ATTENTION = frozenset({"llama", "mistral", "qwen2", "qwen3", "olmo", "olmo2", "phi3", "smollm3"})


def slot_attention(module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                   attention_mask: torch.Tensor | None, dropout: float = 0.0, scaling: float | None = None,
                   **kwargs: Any) -> tuple[torch.Tensor, None]:
    """``query`` [1, heads, tokens, dim]; ``key``/``value`` [slots, kv_heads, width, dim] (the cache's slots);
    ``attention_mask`` [1, 1, tokens, width], True where a token may look in its own slot."""
    import torch

    plan = PLAN.get()
    heads, dim, kv_heads = query.shape[1], query.shape[3], key.shape[1]
    group = heads // kv_heads
    scale = scaling if scaling is not None else dim**-0.5
    if plan is None:
        rows = query.shape[0]
        if (query.shape[2] == 1 and rows >= MATMUL_MIN_ROWS and query.dtype in (torch.bfloat16, torch.float16)
                and dropout == 0.0 and (attention_mask is None or attention_mask.dtype == torch.bool)):
            # a decoding step in half precision: [rows, heads, 1, dim] -> [rows, 1, heads, dim]
            allowed = None if attention_mask is None else attention_mask[:, 0, 0]
            out = _one_token_rows(query.reshape(rows, kv_heads, group, dim), key, value, allowed, scale)
            return out.reshape(rows, 1, heads, dim), None
        from transformers.integrations.sdpa_attention import sdpa_attention_forward

        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      **kwargs)
    tokens = query.shape[2]
    q = query[0].transpose(0, 1).reshape(tokens, kv_heads, group, dim)  # grouped-query heads
    allowed = attention_mask[0, 0]  # [tokens, width]
    out = torch.empty_like(q)
    r = plan.running
    if r:  # one token per running slot 0..r-1: the slots themselves, no gather
        out[:r] = _one_token_rows(q[:r], key[:r], value[:r], allowed[:r], scale)
    for slot, first, end in plan.joining:  # a new row's prompt tokens against its own slot
        n = end - first
        qj = q[first:end].permute(1, 0, 2, 3).reshape(kv_heads, n * group, dim)
        scores = torch.matmul(qj, key[slot].transpose(-1, -2)).mul_(scale).view(kv_heads, n, group, -1)
        scores.masked_fill_(~allowed[first:end][None, :, None, :], float("-inf"))
        probs = torch.softmax(scores, dim=-1).view(kv_heads, n * group, -1)
        out[first:end] = torch.matmul(probs, value[slot]).view(kv_heads, n, group, dim).permute(1, 0, 2, 3)
    return out.reshape(1, tokens, heads, dim), None


def _one_token_rows(q: torch.Tensor, key: torch.Tensor, value: torch.Tensor, allowed: torch.Tensor | None,
                    scale: float) -> torch.Tensor:
    """One query token per row against that row's own slot: ``q`` [rows, kv_heads, group, dim] (the query
    heads that share a key head side by side), ``key``/``value`` [rows, kv_heads, width, dim], ``allowed``
    [rows, width] (None: every column). Returns [rows, kv_heads, group, dim]."""
    import torch

    if q.dtype in (torch.bfloat16, torch.float16):
        # A cache view narrower than its storage reaches oneDNN's half-precision matmul with gaps between its
        # rows' blocks, which it copies element by element (3x the whole product at 32 rows): copy densely.
        key, value = key.contiguous(), value.contiguous()
    scores = torch.matmul(q, key.transpose(-1, -2)).mul_(scale)  # [rows, kv_heads, group, width]
    if allowed is not None:
        scores.masked_fill_(~allowed[:, None, None, :], float("-inf"))
    return torch.matmul(torch.softmax(scores, dim=-1), value)


def install(model: Any) -> bool:
    """Serve ``model``'s attention through :func:`slot_attention` where its type allows (True), else leave it."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    config = getattr(model, "config", None)
    if config is None or getattr(config, "model_type", None) not in PLAIN_ATTENTION:
        return False
    if getattr(config, "_attn_implementation", None) not in ("sdpa", NAME):
        return False  # eager or flash kernels chosen on purpose: leave them
    AttentionInterface.register(NAME, slot_attention)
    AttentionMaskInterface.register(NAME, sdpa_mask)  # masks it is given are built as for SDPA
    config._attn_implementation = NAME  # read by every attention layer at each forward
    return True
