"""Estimate the memory a training run needs, before it starts, and stop runs that cannot fit.

The estimate adds weights, gradients and AdamW state of the trainable weights, activations kept for
backward (per token and layer, from the model's shapes; only block inputs with gradient checkpointing),
the block-diagonal attention masks of packed rows (length x length per row and layer), the
logits of the tokens that carry loss (one chunk of them with chunked cross-entropy), the runtime, and
what the allocator keeps beyond the live tensors. Each term was measured (see the comments and
``bench/memory.py``, whose table in BENCHMARKS.md compares it with peak RSS).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch

from tuneforge.allocator import active as active_allocator
from tuneforge.allocator import release_free_memory

GB = 1024**3




@dataclass(frozen=True)
class AllocatorTerms:
    """What the process's memory allocator adds to the live tensors (``tuneforge.allocator``)."""

    factor: float  # resident bytes of activations per saved-for-backward byte
    runtime: float  # the Python/torch/transformers runtime, tokenizer and data before the model loads


ALLOCATOR_TERMS: dict[str, AllocatorTerms] = {
    # glibc's malloc keeps freed activation temporaries in its heap (its mmap threshold grows to 32 MB), so
    # peak RSS exceeds the live tensors: on SmolLM2-135M, LoRA, the RSS beyond weights and runtime was 1.6x
    # the saved-for-backward bytes at 256 tokens per micro-batch and 2.1x at 916. A fixed mmap threshold
    # brings it to 1.2x but cost 60% more CPU time per step, so the estimate carries a factor instead.
    # Runtime: 0.45 GB measured (RSS) on the bundled model's run.
    "system": AllocatorTerms(1.7, 0.45 * GB),
    # TCMalloc (the `tuneforge` command's allocator where the system has it) reuses those blocks: the ten
    # `bench.memory` configurations (2026-12-04, 10 steps; with glibc's terms the estimates were up to 33%
    # over) fit 1.0x the saved bytes on top of a 0.50 GB runtime (its caches make the runtime larger: the
    # tiny model's runs peaked 0.69-0.72 GB against glibc's 0.62-0.65): every one within -6.3% .. +8.8%.
    "tcmalloc": AllocatorTerms(1.0, 0.50 * GB),
    # jemalloc: the same ten configurations, the same terms: every one within +1% .. +12%.
    "jemalloc": AllocatorTerms(1.0, 0.50 * GB),
}


def allocator_terms(name: str | None = None, device_type: str = "cpu") -> AllocatorTerms:
    """The terms of allocator ``name`` (default: the one this process runs on); glibc's for an allocator
    not measured (mimalloc) and on a GPU, whose activations the CUDA caching allocator holds instead (the
    planner's GPU figures were measured with these)."""
    if device_type != "cpu":
        return ALLOCATOR_TERMS["system"]
    return ALLOCATOR_TERMS.get(name or active_allocator(), ALLOCATOR_TERMS["system"])


# With gradient checkpointing the step holds the block inputs and, measured, about 5 blocks' worth of
# saved-for-backward tensors, not the 1 block being recomputed: SmolLM2-135M, LoRA, 1 packed row, the
# checkpointed first forward alone grew anonymous RSS by 0.47-0.59 MB per token (bench.memory phases,
# 245 and 768 tokens). With 1 block the estimate was -5% (245 tokens) and -18% (768) off the peak; with 5,
# +2% and -3%. Cause not traced (recomputation temporaries kept by the allocator is the likely one), so
# it is carried as a share of the layers (5 of SmolLM2's 30; at least 1), measured on that model only.
CKPT_LIVE_SHARE = 1 / 6


@dataclass
class MemoryEstimate:
    weights: float
    gradients: float
    optimizer: float
    activations: float
    logits: float
    runtime: float = 0.0

    @property
    def total(self) -> float:
        return self.weights + self.gradients + self.optimizer + self.activations + self.logits + self.runtime

    def describe(self) -> str:
        parts = ", ".join(f"{k} {v / GB:.2f}" for k, v in vars(self).items())
        return f"{self.total / GB:.2f} GB ({parts} GB)"


@dataclass(frozen=True)
class ModelShapes:
    """What the estimate reads from a model, once (the planner estimates many micro-batch shapes)."""

    weights: int  # bytes of every parameter
    gradients: int  # bytes of the trainable parameters' gradients
    optimizer: int  # AdamW: two fp32 moments per trainable value
    hidden: int
    intermediate: int
    layers: int
    vocab: int
    heads: int
    kv_heads: int
    head_dim: int
    # inputs (summed over the model) of the LoRA layers with dropout on: each keeps its dropped-out copy of
    # the input (fp32) and the mask (1 byte) for backward; 0 without dropout (fast_lora's path keeps none)
    dropout_inputs: int = 0

    @classmethod
    def of(cls, model: torch.nn.Module) -> ModelShapes:
        trainable = [p for p in model.parameters() if p.requires_grad]
        cfg = getattr(model, "config", None)
        base_cfg = getattr(getattr(model, "base_model", None), "config", cfg) or cfg
        hidden = getattr(base_cfg, "hidden_size", 1024)
        heads = getattr(base_cfg, "num_attention_heads", max(1, hidden // 64))
        return cls(
            weights=sum(p.numel() * p.element_size() for p in model.parameters()),
            gradients=sum(p.numel() * p.element_size() for p in trainable),
            optimizer=sum(2 * p.numel() * 4 for p in trainable),
            hidden=hidden, intermediate=getattr(base_cfg, "intermediate_size", 4 * hidden),
            layers=getattr(base_cfg, "num_hidden_layers", 12), vocab=getattr(base_cfg, "vocab_size", 32000),
            heads=heads, kv_heads=getattr(base_cfg, "num_key_value_heads", None) or heads,
            head_dim=getattr(base_cfg, "head_dim", None) or hidden // heads,
            dropout_inputs=_lora_dropout_inputs(model),
        )


def _lora_dropout_inputs(model: torch.nn.Module) -> int:
    """Sum of ``in_features`` of PEFT LoRA layers whose dropout is on. examples/lora.yaml (dropout 0.05, all
    linears) under a 4 GB budget peaked at 4.96 GB against a 3.33 GB estimate that left them out: SmolLM2
    keeps 4,992 values per token and layer there (6 x 576 + 1,536)."""
    total = 0
    for module in model.modules():
        drops = getattr(module, "lora_dropout", None)
        if isinstance(drops, torch.nn.ModuleDict) and any(
                isinstance(d, torch.nn.Dropout) and d.p > 0 for d in drops.values()):
            total += int(getattr(module, "in_features", 0) or 0)
    return total


def estimate_batch(shapes: ModelShapes, rows: int, width: int, gradient_checkpointing: bool,
                   act_bytes: int = 4, logit_positions: int | None = None,
                   chunked_logits: bool = False, masks: bool = True, device_type: str = "cpu",
                   allocator: str | None = None) -> MemoryEstimate:
    """Peak resident memory of a training step on a micro-batch of ``rows`` rows padded to ``width``.

    ``logit_positions``: positions that reach the LM head (default: every token); ``chunked_logits``:
    the loss runs through ``chunked_loss`` (logits of one chunk at a time, not of every position);
    ``masks``: count the attention masks of block-diagonal (packed or padded) rows (none with the
    variable-length kernel); ``device_type``: where the chunked loss runs (its chunk size);
    ``allocator``: the memory allocator's name (default: this process's, :func:`allocator_terms`).
    """
    from tuneforge.train import chunked_loss

    s = shapes
    tokens = rows * width
    # Saved for backward per token and layer, measured with saved_tensors_hooks on SmolLM2 (fp32 values):
    # 6 x hidden (norm outputs, q, attention output) + 4 x intermediate (gate, up, act, product) + k and
    # v = 10,107 for LoRA; full fine-tuning keeps 2 x hidden more (11,190). With a block-diagonal mask
    # (packed or padded rows) SDPA also keeps k/v repeated to every head and each layer its own
    # [rows, 1, L, L] fp32 mask; CPU SDPA is a flash kernel, so no [heads x L x L] scores are kept (the
    # term that made a 711-token run's estimate 17 GB against a 2.8 GB peak).
    kv_dim = s.kv_heads * s.head_dim
    per_token_layer = (8 * s.hidden + 4 * s.intermediate + 2 * kv_dim + 2 * (s.heads - s.kv_heads) * s.head_dim)
    per_token_layer *= act_bytes
    mask_layer = rows * width * width * 4 if masks else 0
    dropout = tokens * s.dropout_inputs * (act_bytes + 1)  # LoRA dropout: the dropped input and its mask
    if gradient_checkpointing:  # block inputs kept; blocks recomputed one at a time in backward
        live = max(1, round(s.layers * CKPT_LIVE_SHARE))
        saved = tokens * (s.layers * s.hidden * act_bytes + live * per_token_layer) + mask_layer
        saved += dropout * live / max(1, s.layers)
    else:
        saved = tokens * s.layers * per_token_layer + s.layers * mask_layer + dropout
    terms = allocator_terms(allocator, device_type)
    activations = saved * terms.factor
    # fp32 logits of the positions that carry loss: the model's own loss keeps logits, log-softmax and
    # their gradient (3 copies); the chunked loss one chunk's logits, turned into its gradient in place,
    # and logsumexp's temporary (2 copies: the tiny model's loss phase peaked 127 MB above the forward,
    # 2 x 64 MiB chunks).
    positions = tokens if logit_positions is None else min(tokens, logit_positions)
    copies = 3
    if chunked_logits:
        positions, copies = min(positions, chunked_loss.chunk_rows(s.vocab, device_type)), 2
    logits = positions * s.vocab * 4 * copies
    return MemoryEstimate(float(s.weights), float(s.gradients), float(s.optimizer), activations, logits,
                          terms.runtime)


def estimate_memory(model: torch.nn.Module, tokens_per_micro_batch: int, gradient_checkpointing: bool,
                    act_bytes: int = 4, logit_tokens: int | None = None, seq_len: int | None = None,
                    chunked_logits: bool = False) -> MemoryEstimate:
    """``estimate_batch`` for ``tokens_per_micro_batch`` tokens in rows of ``seq_len`` (attention masks
    left out when it is not given)."""
    width = seq_len or tokens_per_micro_batch
    rows = max(1, tokens_per_micro_batch // width)
    return estimate_batch(ModelShapes.of(model), rows, width, gradient_checkpointing, act_bytes, logit_tokens,
                          chunked_logits, masks=seq_len is not None)


def _meminfo(key: str) -> float | None:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return float(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _cgroup_limit() -> float | None:
    try:
        raw = Path("/sys/fs/cgroup/memory.max").read_text().strip()
    except OSError:
        return None
    return None if raw == "max" else float(raw)


def memory_budget(device: torch.device) -> tuple[float, float]:
    """(limit, free now) in bytes.

    GPU: both are the free device memory (other processes rarely give it back). CPU: the limit is the
    machine's (or container's) memory, what a run can never exceed; free now is MemAvailable, which
    moves with other processes, so exceeding it only earns a warning.
    """
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return float(free), float(free)
    total = _meminfo("MemTotal") or float(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    limit = min(total, _cgroup_limit() or total)
    free = _meminfo("MemAvailable") or limit
    return limit, min(free, limit)


def return_freed_memory() -> None:
    """Give the heap memory that training freed (activations, gradients, AdamW state) back to the system.

    glibc keeps freed chunks for reuse; what runs after training (evaluation, export) allocates other
    sizes, which do not fit those holes, and grows RSS on top of them: measured, a bf16 LoRA run's shared
    evaluator raised the peak 190 MB above training's after 6 steps. Called once per run (per step it halved
    tokens/s, every step faulting its pages in again). On TCMalloc or jemalloc (``tuneforge.allocator``) their
    own call; a no-op where the C library has no ``malloc_trim``.
    """
    import ctypes
    import gc

    gc.collect()
    if release_free_memory():
        return
    try:
        libc = ctypes.CDLL(None)
        trim = libc.malloc_trim
    except (OSError, AttributeError, TypeError):  # TypeError: Windows cannot open "the process itself"
        return
    trim(0)
