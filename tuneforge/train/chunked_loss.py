"""Cross-entropy through the LM head, chunk by chunk, so ``[positions x vocab]`` logits never exist whole.

A causal LM's head turns every position's hidden state into one logit per vocabulary entry. With
SmolLM2's 49,152 entries, 4,096 positions of fp32 logits are 0.8 GB, and their softmax and gradient as
much again each; with Gemma 3's 262,144 entries, five times that. As Liger's fused linear
cross-entropy and Apple's Cut Cross-Entropy do on GPUs, this computes the logits of a few hundred
positions at a time (``CHUNK_BYTES`` of fp32 logits per chunk), takes their log-sum-exp and target
logit, and, when gradients are wanted, the gradient of the summed loss with respect to the hidden
states (and the head weight, if it trains) right there in the forward pass: the loss is a sum over
tokens, so backward only has to scale those gradients by the incoming scalar. Nothing is recomputed,
so the head costs the same matmuls as the unchunked path.

The model is run without its head (``hidden_states``): the decoder body gives the hidden states, the
positions that carry loss are picked out, and ``head_cross_entropy`` applies the head chunk by chunk.
``chunkable`` says when that is the same maths as the model's own forward, and why not otherwise.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from tuneforge.data.chat import IGNORE_INDEX

# fp32 logits per chunk: 64 MiB is 341 positions of a 49,152-token vocabulary, 64 of a 262,144-token one;
# each chunk's matmul is still large enough to run at full speed on a CPU. A GPU runs each chunk's dozen
# kernels in well under a millisecond, so there the chunks are 8x larger (fewer launches, a matmul that fills
# the device; 2 x 512 MiB live at once is little beside a GPU's activations).
CHUNK_BYTES = 64 * 2**20
CUDA_CHUNK_BYTES = 512 * 2**20

# Model types whose causal-LM forward is exactly "decoder body -> lm_head (-> final_logit_softcapping)".
# Others (Cohere's logit_scale, Granite's logits_scaling, MoE router losses, ...) keep the model's own
# forward, which is always right, only not chunked.
CHUNKED_MODEL_TYPES = frozenset({
    "llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "gemma3_text", "phi3", "olmo", "olmo2", "smollm3",
})


# The positions given to the head are padded (ignored targets) to a multiple of this. Why: every step has its
# own number of loss positions, so its [positions x vocab] temporaries (tens of MB each) had a new size every
# step, and glibc, unable to reuse the freed ones for slightly larger ones, grew the heap step after step
# (bf16 LoRA, 24 steps: peak 1,175 -> 1,135 MB; the padded rows cost the head <= 31 positions of matmul).
ROW_MULTIPLE = 32


def chunk_rows(vocab: int, device_type: str = "cpu") -> int:
    """Positions per chunk so that one chunk's fp32 logits take about ``CHUNK_BYTES`` (``CUDA_CHUNK_BYTES``)."""
    return max(1, (CUDA_CHUNK_BYTES if device_type == "cuda" else CHUNK_BYTES) // (4 * max(vocab, 1)))


class _LinearCrossEntropy(torch.autograd.Function):
    """Sum of token cross-entropies of ``hidden @ weight.T (+ bias)``; gradients computed in forward."""

    @staticmethod
    def forward(ctx, hidden, weight, bias, target, chunk: int, softcap: float | None, compute_dtype,
                need_hidden: bool, need_weight: bool):
        n = hidden.shape[0]
        losses = torch.zeros(n, dtype=torch.float32, device=hidden.device)
        grad_h = torch.empty_like(hidden) if need_hidden else None
        grad_w = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device) if need_weight else None
        need_b = need_weight and bias is not None
        grad_b = torch.zeros(bias.shape, dtype=torch.float32, device=weight.device) if need_b else None
        w = weight.to(compute_dtype)
        b = bias.to(compute_dtype) if bias is not None else None
        device_type = hidden.device.type
        with torch.autocast(device_type, enabled=False):  # dtypes are chosen here, explicitly
            for s in range(0, n, chunk):
                h = hidden[s : s + chunk].to(compute_dtype)
                t = target[s : s + chunk]
                valid = t != IGNORE_INDEX
                t_safe = torch.where(valid, t, 0).unsqueeze(1)
                z = F.linear(h, w, b)
                th = None
                if softcap is not None:  # Gemma 2's final_logit_softcapping: softcap * tanh(z / softcap)
                    th = torch.tanh(z.float() / softcap)
                    z = th * softcap
                # One fused kernel for the log-probabilities (float32, also from a half z): torch.logsumexp is
                # composite on CPU (two [chunk x vocab] temporaries), and subtracting it was one more pass.
                logp = torch.log_softmax(z, dim=-1, dtype=torch.float32)
                del z
                losses[s : s + chunk] = -logp.gather(1, t_safe).squeeze(1) * valid
                if grad_h is None and grad_w is None:
                    continue
                # d loss / d z = softmax(z) - onehot(target), zero on ignored rows (in place: logp is ours).
                dz = logp.exp_()
                dz.scatter_add_(1, t_safe, torch.full_like(valid, -1.0, dtype=dz.dtype).unsqueeze(1))
                dz.mul_(valid.unsqueeze(1))
                if th is not None:  # d softcap(z) / dz = 1 - tanh^2
                    dz.mul_(1 - th * th)
                dz = dz.to(compute_dtype)
                if grad_h is not None:
                    grad_h[s : s + chunk] = (dz @ w).to(grad_h.dtype)
                if grad_w is not None:
                    grad_w.add_((dz.t() @ h).float())
                if grad_b is not None:
                    grad_b.add_(dz.float().sum(0))
        ctx.grads = (grad_h, grad_w, grad_b)
        ctx.dtypes = (weight.dtype, bias.dtype if bias is not None else None)
        total = losses.sum()
        ctx.mark_non_differentiable(losses)
        return total, losses

    @staticmethod
    def backward(ctx, grad_total, _grad_losses):
        grad_h, grad_w, grad_b = ctx.grads
        ctx.grads = (None, None, None)  # hand the buffers over (autograd can then keep them as .grad)
        w_dtype, b_dtype = ctx.dtypes
        scale = grad_total.float()
        if grad_h is not None:
            grad_h = grad_h.mul_(scale.to(grad_h.dtype))
        if grad_w is not None:
            grad_w = grad_w.mul_(scale).to(w_dtype)
        if grad_b is not None:
            grad_b = grad_b.mul_(scale).to(b_dtype)
        return grad_h, grad_w, grad_b, None, None, None, None, None, None


def linear_cross_entropy(hidden: torch.Tensor, weight: torch.Tensor, target: torch.Tensor,
                         bias: torch.Tensor | None = None, softcap: float | None = None,
                         chunk: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(sum of token losses, detached per-token losses) of the head ``weight`` over ``hidden`` [N, H].

    ``target`` [N] may hold ``IGNORE_INDEX`` (loss 0, no gradient). The head runs in the autocast dtype
    when autocast is on (as ``nn.Linear`` would), the loss in fp32. Only the sum is differentiable.
    """
    device_type = hidden.device.type
    compute_dtype = torch.get_autocast_dtype(device_type) if torch.is_autocast_enabled(device_type) else weight.dtype
    grad = torch.is_grad_enabled()
    chunk = chunk or chunk_rows(weight.shape[0], device_type)
    n = hidden.shape[0]
    pad = -n % ROW_MULTIPLE
    if pad:
        hidden = F.pad(hidden, (0, 0, 0, pad))
        target = F.pad(target, (0, pad), value=IGNORE_INDEX)
    total, losses = _LinearCrossEntropy.apply(
        hidden, weight, bias, target, chunk, softcap, compute_dtype,
        grad and hidden.requires_grad, grad and weight.requires_grad,
    )
    return total, losses[:n]


def _module_chunk_loss(head: torch.nn.Module, softcap: float | None, h: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    z = head(h).float()
    if softcap is not None:
        z = torch.tanh(z / softcap) * softcap
    return F.cross_entropy(z, t, ignore_index=IGNORE_INDEX, reduction="none")


def head_cross_entropy(hidden: torch.Tensor, head: torch.nn.Module, target: torch.Tensor,
                       softcap: float | None = None, chunk: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``linear_cross_entropy`` through an LM head module.

    A plain ``nn.Linear`` (also when its weight is tied to the embeddings) takes the fused path. Any other
    head (a LoRA-adapted ``lm_head``, say) runs as itself, one checkpointed chunk at a time: its chunk's
    logits are recomputed in backward instead of kept, which costs one more head forward.
    """
    if type(head) is torch.nn.Linear:
        return linear_cross_entropy(hidden, head.weight, target, head.bias, softcap, chunk)
    weight = getattr(head, "weight", None)
    chunk = chunk or chunk_rows(weight.shape[0] if isinstance(weight, torch.Tensor) else 262_144, hidden.device.type)
    parts = []
    for s in range(0, hidden.shape[0], chunk):
        h, t = hidden[s : s + chunk], target[s : s + chunk]
        if torch.is_grad_enabled():
            parts.append(checkpoint(_module_chunk_loss, head, softcap, h, t, use_reentrant=False))
        else:
            parts.append(_module_chunk_loss(head, softcap, h, t))
    losses = torch.cat(parts) if parts else hidden.new_zeros(0, dtype=torch.float32)
    return losses.sum(), losses.detach()


def chunkable(model: torch.nn.Module, prompt_learning: bool) -> tuple[torch.nn.Module | None, str]:
    """The causal LM under ``model`` (PEFT wrapper removed) when its loss can be chunked, else (None, why).

    Cases left to the model's own forward (correct, only not chunked): prompt/prefix tuning, whose PEFT
    wrapper prepends virtual tokens in its forward, which the decoder body alone would skip; a model
    wrapped for distributed training (DDP and friends synchronise gradients from their own forward);
    and architectures whose forward does more between the decoder and the logits than the head and
    softcapping (see ``CHUNKED_MODEL_TYPES``).
    """
    if prompt_learning:
        return None, "prompt/prefix tuning adds virtual tokens in the PEFT forward"
    if _fsdp_module(model):  # its root unit (embeddings, head) gathers its weights in the root's forward only
        return None, "an FSDP model gathers its weights in its own forward"
    lm = model
    peft_base = getattr(model, "get_base_model", None)
    if callable(peft_base) and hasattr(model, "peft_config"):
        lm = peft_base()
    config = getattr(lm, "config", None)
    if config is None or not hasattr(lm, "get_decoder") or not hasattr(lm, "get_output_embeddings"):
        return None, f"{type(model).__name__} is not a causal LM this code knows (wrapped for distributed training?)"
    if getattr(config, "model_type", None) not in CHUNKED_MODEL_TYPES:
        return None, f"model type {getattr(config, 'model_type', None)!r} may post-process its logits"
    if lm.get_output_embeddings() is None:
        return None, "the model has no output embeddings"
    return lm, ""


def _fsdp_module(model: torch.nn.Module) -> bool:
    from torch.distributed.fsdp import FSDPModule

    return isinstance(model, FSDPModule)


def hidden_states(lm: torch.nn.Module, **inputs) -> torch.Tensor:
    """The decoder body's last hidden states [B, L, H] (what the head would turn into logits)."""
    return lm.get_decoder()(**inputs).last_hidden_state


def lm_cross_entropy(lm: torch.nn.Module, hidden: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Loss sum and per-token losses of ``lm``'s head over selected positions' ``hidden`` [N, H]."""
    softcap = getattr(lm.config, "final_logit_softcapping", None)
    return head_cross_entropy(hidden, lm.get_output_embeddings(), target, softcap)
