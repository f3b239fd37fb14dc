"""Attention over packed rows through PyTorch's variable-length flash-attention kernel (CUDA).

A packed row holds several examples, told apart by position ids that restart at 0. Through SDPA the model
builds a block-diagonal mask ``[rows, 1, L, L]`` and the kernel computes every query against every key of
the row, masked or not: in rows of 2,048 tokens of ~100-token examples that is ~20x the attention the
examples need, and an explicit mask rules out the flash kernel. ``torch.nn.attention.varlen.varlen_attn``
(torch >= 2.10, CUDA) takes the examples as one flat sequence with their boundaries (cumulative lengths)
and attends causally inside each: flash-attention's variable-length kernel, the one TRL and Axolotl's
"padding-free" training reach through the ``flash-attn`` package, here without that package.

Registered with transformers' attention interface as ``NAME`` (``model.attn_implementation: varlen``;
``auto`` picks it for training on a CUDA device that has the kernel). Its mask function is transformers'
flash-attention one (``None``, or the 2-D padding mask), so no ``[L x L]`` mask is built. The boundaries
come from ``cu_seq_lens_q`` when the caller computed them on the host (``packed_boundaries``: tuneforge's
training step, TRL's padding-free collator), else from the position ids and the padding mask. For
training and scoring only: a query shorter than its keys (decoding with a KV cache) is refused, and
``use_sdpa`` switches a trained model back before anything generates with it.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any

import torch

NAME = "tuneforge_varlen"

# Model types whose attention layers hand transformers' attention functions plain causal (optionally
# sliding-window) attention over 1-D positions: what this kernel computes. Others keep SDPA under ``auto``:
# Gemma 2's soft-capped logits, multimodal rotary positions (Qwen2-VL), attention sinks, ALiBi biases.
MODEL_TYPES = frozenset({
    "llama", "mistral", "qwen2", "qwen3", "gemma", "gemma3_text", "phi3", "olmo", "olmo2", "smollm3",
})


def kernel() -> Callable | None:
    """PyTorch's ``varlen_attn`` where this torch has it, else None."""
    try:
        from torch.nn.attention.varlen import varlen_attn
    except ImportError:
        return None
    return varlen_attn


def available(device: torch.device) -> bool:
    """The variable-length kernel can run here: a CUDA device and a torch that ships it."""
    return device.type == "cuda" and kernel() is not None


def supports(config: Any) -> bool:
    """``auto`` may give this model (its transformers config) the variable-length kernel."""
    return getattr(config, "model_type", None) in MODEL_TYPES and getattr(config, "attn_logit_softcapping", None) is None


def register() -> str:
    """Make ``NAME`` a valid ``attn_implementation`` for transformers (idempotent); returns the name."""
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, flash_attention_mask

    AttentionInterface.register(NAME, varlen_attention_forward)
    ALL_MASK_ATTENTION_FUNCTIONS.register(NAME, flash_attention_mask)
    return NAME


def in_use(model: torch.nn.Module) -> bool:
    """The (PEFT- or DDP-wrapped) model attends through ``NAME``."""
    config = getattr(model, "config", None) or getattr(getattr(model, "module", None), "config", None)
    return getattr(config, "_attn_implementation", None) == NAME


def use_sdpa(model: torch.nn.Module) -> None:
    """Switch a model trained with ``NAME`` back to SDPA (generation with a KV cache needs it)."""
    if in_use(model):
        inner = model.get_base_model() if hasattr(model, "get_base_model") else model
        inner.set_attn_implementation("sdpa")


def packed_boundaries(position_ids: torch.Tensor, mask: torch.Tensor | None = None) -> dict[str, Any]:
    """Cumulative example lengths over the flattened batch (``cu_seq_lens_q/k``) and the longest example
    (``max_length_q/k``), the keyword arguments transformers hands every attention call.

    An example starts at a position id of 0 or at the first kept token of a row; tokens whose ``mask`` is
    0 (padding) are left out. Computed once per batch, on the host where the ids live, so no layer waits
    on the device to learn the boundaries.
    """
    cu, longest = cumulative_lengths(position_ids, mask, tuple(position_ids.shape), position_ids.device)
    return {"cu_seq_lens_q": cu, "cu_seq_lens_k": cu, "max_length_q": longest, "max_length_k": longest}


def cumulative_lengths(position_ids: torch.Tensor | None, mask: torch.Tensor | None, shape: tuple[int, ...],
                       device: torch.device) -> tuple[torch.Tensor, int]:
    """The examples' cumulative lengths over the kept tokens of a ``shape`` = (rows, width) batch (int32,
    starting at 0) and the longest example's length."""
    starts, n = _starts(position_ids, mask, shape, device)
    cu = torch.cat([starts, torch.tensor([n], device=starts.device)]).to(torch.int32)
    return cu, int((cu[1:] - cu[:-1]).max()) if len(cu) > 1 else 0


def _starts(position_ids: torch.Tensor | None, mask: torch.Tensor | None, shape: tuple[int, ...],
            device: torch.device) -> tuple[torch.Tensor, int]:
    """Indices (into the kept tokens of a ``shape`` = (rows, width) batch) where an example starts, and the
    number of kept tokens. Without position ids every row is one example."""
    rows, width = shape
    row = torch.arange(rows, device=device).repeat_interleave(width)
    pos = position_ids.expand(rows, width).reshape(-1) if position_ids is not None else None
    if mask is not None:
        keep = mask.reshape(-1).bool()
        row = row[keep]
        pos = pos[keep] if pos is not None else None
    new_row = torch.ones_like(row, dtype=torch.bool)
    new_row[1:] = row[1:] != row[:-1]
    start = new_row if pos is None else new_row | (pos == 0)
    return start.nonzero().squeeze(1), row.numel()


@functools.lru_cache(maxsize=4)
def _parameters(fn: Callable) -> frozenset[str]:
    """The kernel's keyword names, read once (every layer of every forward calls it)."""
    return frozenset(inspect.signature(fn).parameters)


def _call_kernel(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cu: torch.Tensor, longest: int,
                 scale: float | None, window: int | None) -> torch.Tensor:
    """``varlen_attn`` causal (within ``window`` keys where given), across torch versions' signatures."""
    fn = kernel()
    if fn is None:
        raise RuntimeError("attn_implementation varlen needs torch.nn.attention.varlen (torch >= 2.10)")
    params = _parameters(fn)
    kwargs: dict[str, Any] = {"scale": scale}
    if "window_size" in params:  # torch >= 2.11: causal is a window of (-1 or W-1 keys back, 0 ahead)
        kwargs["window_size"] = (window - 1 if window else -1, 0)
    else:  # torch 2.10: a causal flag, no window
        if window:
            raise RuntimeError("attn_implementation varlen: sliding-window layers need torch >= 2.11")
        kwargs["is_causal"] = True
    if k.shape[1] != q.shape[1]:  # grouped-query attention: K/V heads shared by groups of query heads
        if "enable_gqa" in params:
            kwargs["enable_gqa"] = True
        else:
            group = q.shape[1] // k.shape[1]
            k, v = k.repeat_interleave(group, dim=1), v.repeat_interleave(group, dim=1)
    return fn(q, k, v, cu, cu, longest, longest, **kwargs)


def varlen_attention_forward(module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                             attention_mask: torch.Tensor | None, dropout: float = 0.0,
                             scaling: float | None = None, sliding_window: int | None = None,
                             **kwargs: Any) -> tuple[torch.Tensor, None]:
    """transformers' attention-function signature: ``query`` ``[B, H, L, D]``, ``key``/``value``
    ``[B, H_kv, L, D]``; returns ``[B, L, H, D]`` (padding positions zero) and no weights."""
    if kwargs.get("softcap") is not None:
        raise ValueError("attn_implementation varlen does not support attention logit soft-capping")
    if dropout:
        raise ValueError("attn_implementation varlen does not support attention dropout")
    rows, heads, width, dim = query.shape
    if key.shape[2] != width:
        raise RuntimeError("attn_implementation varlen is for training and scoring (queries as long as keys), "
                           "not decoding with a KV cache: switch the model to sdpa first (use_sdpa)")
    mask = attention_mask if attention_mask is not None and attention_mask.dim() == 2 else None
    if attention_mask is not None and mask is None:
        raise RuntimeError("attn_implementation varlen expects no mask or a 2-D padding mask")

    def flat(t: torch.Tensor) -> torch.Tensor:  # [B, H, L, D] -> [B*L, H, D]
        return t.transpose(1, 2).reshape(rows * width, t.shape[1], dim)

    # Unlike SDPA, the kernel is not cast by autocast, and under autocast the rotary embedding leaves q and k
    # in fp32 beside a bf16 v (fp32 weights, full fine-tuning): all three go in the autocast dtype.
    device = query.device.type
    dtype = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else value.dtype
    q, k, v = (flat(t).to(dtype) for t in (query, key, value))
    keep = mask.reshape(-1).bool().nonzero().squeeze(1) if mask is not None else None
    if keep is not None:
        q, k, v = q[keep], k[keep], v[keep]
    cu, longest = kwargs.get("cu_seq_lens_q"), kwargs.get("max_length_q")
    if cu is None or keep is not None:
        cu, longest = cumulative_lengths(kwargs.get("position_ids"), mask, (rows, width), query.device)
    out = _call_kernel(q, k, v, cu.to(query.device), int(longest), scaling, sliding_window)
    if keep is not None:
        full = out.new_zeros(rows * width, heads, dim)
        full[keep] = out
        out = full
    return out.reshape(rows, width, heads, dim), None
