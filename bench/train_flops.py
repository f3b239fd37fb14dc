"""FLOPs a LoRA training step computes, per contender, and the share of the machine's matmul rate reached.

Per trained (non-padding) token, for a decoder with a frozen base and LoRA on every linear layer
(``N_mm`` = weights of the decoder layers' linear layers, summed over layers; ``N_lora`` = r x (in + out)
summed over the same layers; ``L`` layers, ``d`` = heads x head_dim, ``ctx`` = the width of the row the
token sits in, ``V`` vocabulary, ``h`` hidden size)::

    base matmuls   forward 2 N_mm + backward input-gradients 2 N_mm        (frozen: no weight gradients)
    LoRA           forward 2 N_lora + input-gradients 2 N_lora + weight gradients 2 N_lora = 6 N_lora
    attention      forward 4 L d ctx (Q K^T and P V) + backward 8 L d ctx (dP, dV, dQ, dK) = 12 L d ctx
    LM head        forward 2 V h + backward input-gradients 2 V h = 4 V h, on the positions where it runs

so ``F = 4 N_mm + 6 N_lora + 12 L d ctx + 4 V h x (LM-head positions / tokens)``. What each contender
computes: both run the LM head on the **loss positions only** -- tuneforge by its chunked head and loss
(``train/chunked_loss.py``), TRL >= 1.x by the tiled "fused LM head" its SFTTrainer patches into the model
(``trl.trainer.utils.add_fused_lm_head``: backbone, then the head in tiles over the positions whose next-token
label is not -100; it also computes entropy and top-1 over the vocabulary there, elementwise work not
counted). Each run's own count of loss positions is used (labels of the timed steps). Attention is counted over the
whole row width (``ctx``): what a kernel given an explicit mask computes (a causal or block-diagonal
kernel that skips masked blocks would do up to half of it; at ctx=192 the term is ~6% of F). The first
layer's q/k/v input-gradients (its input is the frozen embedding: autograd skips them) are counted; they
are under 1% of F. Elementwise work (norms, RoPE, SiLU, softmax, the optimizer) is not counted: it is
what a step spends beyond the matmul rate.

The share: achieved FLOP/s (F x tokens/s) over the fp32 ``torch.mm`` rate measured in the same run with
the contenders' thread count (best of the start and end measurements); per CPU-second likewise (F x
tokens/CPU-s over matmul FLOPs per CPU-second), which the other sessions' load disturbs less.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

LINEARS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def linear_shapes(cfg: dict[str, Any]) -> dict[str, tuple[int, int]]:
    """(in, out) of each linear layer of one Llama-style decoder layer, from its ``config.json``."""
    h, inter = cfg["hidden_size"], cfg["intermediate_size"]
    hd = cfg.get("head_dim") or h // cfg["num_attention_heads"]
    q, kv = cfg["num_attention_heads"] * hd, cfg["num_key_value_heads"] * hd
    return {"q_proj": (h, q), "k_proj": (h, kv), "v_proj": (h, kv), "o_proj": (q, h),
            "gate_proj": (h, inter), "up_proj": (h, inter), "down_proj": (inter, h)}


def flops_terms(cfg: dict[str, Any], r: int, ctx: float, head_fraction: float, method: str = "lora") -> dict[str, float]:
    """FLOPs per trained token by term (see the module docstring); ``head_fraction`` = head positions / tokens.

    ``method="full"``: every weight gets its gradient too (6 per weight and token instead of 4), no LoRA;
    ``qlora`` counts as ``lora`` (dequantising the 4-bit weights is not a matmul).
    """
    shapes = linear_shapes(cfg)
    layers = cfg["num_hidden_layers"]
    n_mm = layers * sum(i * o for i, o in shapes.values())
    n_lora = layers * sum(r * (i + o) for i, o in shapes.values())
    d_attn = cfg["num_attention_heads"] * (cfg.get("head_dim") or cfg["hidden_size"] // cfg["num_attention_heads"])
    per_weight = 6.0 if method == "full" else 4.0
    return {
        "base": per_weight * n_mm,
        "lora": 0.0 if method == "full" else 6.0 * n_lora,
        "attention": 12.0 * layers * d_attn * ctx,
        "lm_head": per_weight * cfg["vocab_size"] * cfg["hidden_size"] * head_fraction,
    }


def model_config(name: str) -> dict[str, Any]:
    from tuneforge.models import resolve_model

    return json.loads((Path(resolve_model(name)) / "config.json").read_text())


def per_token(cfg: dict[str, Any], r: int, run: dict[str, Any], head_on_all: bool = False,
              per_example: bool = False, method: str = "lora") -> dict[str, float]:
    """Terms for one measured run: its mean row width and its share of LM-head positions.

    ``head_on_all``: a contender whose LM head runs on every position (transformers' own forward without
    ``logits_to_keep``), not only on the loss positions. ``per_example``: attention counted over each
    example's own length (what a variable-length kernel computes and what the model needs), not the row's.
    """
    # token-weighted mean attention width of the timed steps: the row's, or the example's
    ctx = run["example_ctx_tokens" if per_example else "ctx_tokens"] / run["tokens"]
    fraction = 1.0 if head_on_all else run["loss_tokens"] / run["tokens"]
    return flops_terms(cfg, r, ctx, fraction, method)


def utilisation_row(label: str, flops: dict[str, float], run: dict[str, Any], rate: float,
                    cpu_rate: float) -> dict[str, Any]:
    """One contender's FLOPs per token, achieved GFLOP/s and share of the matmul rate (wall and CPU)."""
    f = sum(flops.values())
    return {
        "contender": label, "MFLOP/token": f / 1e6,
        "of which LM head": f"{100 * flops['lm_head'] / f:.0f}%",
        "GFLOP/s": f * run["tokens_per_s"] / 1e9,
        "% of mm rate (wall)": 100 * f * run["tokens_per_s"] / 1e9 / rate,
        "% of mm rate (CPU)": 100 * f * run["tokens_per_cpu_s"] / 1e9 / cpu_rate,
    }


def needed_share(f_tf: float, f_trl: float, trl_share: float, target: float = 2.0) -> float:
    """tuneforge's share of the matmul rate that ``target`` x TRL's tokens/s would take.

    Time per token is F / (share x rate): tuneforge at ``target`` x TRL's speed needs
    share_tf = target x (F_tf / F_trl) x share_TRL. Above ~100% the target is out of reach without
    computing fewer FLOPs; well below, TRL spends that much time beyond its matmuls.
    """
    return target * f_tf / f_trl * trl_share


def shape_rates(tokens: int = 180, rounds: int = 6, r: int = 16, model: str = "smollm2-135m-instruct") -> dict:
    """fp32 mm GFLOP per CPU-second at the step's own shapes vs a 2048x2048 mm, alternated round by round.

    The step's matmuls are small (``tokens`` rows, 192-4096 columns; LoRA's r columns): this is the rate
    a step made of nothing but its matmuls could reach, the realistic bound on its share of the mm rate.
    Run with the contenders' threads and ``OMP_WAIT_POLICY=PASSIVE`` (spinning threads inflate CPU-s).
    """
    import statistics
    import time

    import torch

    shapes = list(linear_shapes(model_config(model)).values())
    base = [(torch.randn(tokens, i), torch.randn(i, o)) for i, o in shapes]
    base += [(torch.randn(tokens, o), torch.randn(o, i)) for i, o in shapes]  # input gradients g @ W
    lora = [(torch.randn(tokens, i), torch.randn(i, r)) for i, _ in shapes]
    lora += [(torch.randn(tokens, r), torch.randn(r, o)) for _, o in shapes]
    big = [(torch.randn(2048, 2048), torch.randn(2048, 2048))]

    def rate(pairs, reps: int) -> float:
        flops = sum(2 * a.shape[0] * a.shape[1] * b.shape[1] for a, b in pairs) * reps
        c0 = time.process_time()
        for _ in range(reps):
            for a, b in pairs:
                torch.mm(a, b)
        return flops / max(time.process_time() - c0, 1e-9) / 1e9

    out: dict[str, list[float]] = {"2048x2048 mm": [], "base shapes (fwd + input grads)": [], "LoRA shapes": []}
    for _ in range(rounds):
        out["2048x2048 mm"].append(rate(big, 4))
        out["base shapes (fwd + input grads)"].append(rate(base, 30))
        out["LoRA shapes"].append(rate(lora, 30))
    return {k: statistics.median(v) for k, v in out.items()}


if __name__ == "__main__":
    import os

    rates = shape_rates()
    print(f"torch threads as set by OMP_NUM_THREADS; load average {os.getloadavg()}")
    for name, gflops in rates.items():
        print(f"{name:34s} {gflops:6.1f} GFLOP/CPU-s  ({100 * gflops / rates['2048x2048 mm']:.0f}% of the 2048 mm)")
