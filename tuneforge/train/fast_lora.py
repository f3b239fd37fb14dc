"""A LoRA linear layer as one autograd function: no elementwise passes over the layer's output.

PEFT computes ``result = base(x) + lora_B(lora_A(dropout(x))) * scaling``: besides the three matmuls
that is a multiply and an add over the whole ``[tokens x out_features]`` output in forward, their
mirror images in backward, and one more add where the input gradients of the base weight and of
``lora_A`` meet. On a small model on a CPU those ~4 passes per adapted linear (210 linears in
SmolLM2-135M) are a large share of a step that is otherwise matmuls, and each is one more
synchronisation of the thread pool. Here the scaling and the adds ride on the matmuls themselves:

- forward:  ``y = addmm(x W^T + b, h, B^T, alpha=s)`` with ``h = x A^T``;
- backward: ``gh = s g B``, ``grad_B = s g^T h``, ``grad_A = gh^T x``, ``grad_x = addmm(g W, gh, A)``
  (the multiplies by ``s`` are on ``[tokens x r]`` and ``[out x r]``, r = 16).

A frozen base in bfloat16 or float16 (``model.dtype: bfloat16``) with float32 adapters (PEFT's default) takes
the same function with every product in the base's dtype, as under autocast: the adapter's weights are
cast down for the step (``[r x features]``, cheap), the matmuls accumulate in float32 and round once, and
the adapter's gradients come back float32 for the float32 optimizer. PEFT without autocast instead casts
the input and the output up to float32 around the adapter: four conversions of ``[tokens x features]``
tensors per layer and step, measured at 14% of a SmolLM2 bf16 step (``bench.profile_train --dtype
bfloat16``), and skinny float32 matmuls beside bfloat16 ones.

In one dtype the maths is PEFT's (the same result to float rounding; a test compares outputs and every
gradient); with a half base it is PEFT's under autocast, the sum rounded once instead of twice.
``FastLoraLinear.forward`` falls back to PEFT's own forward for anything else: dropout, DoRA and other
variants, several or disabled adapters, merged weights, autocast, a base layer that is not a plain
``nn.Linear`` (quantised) or carries hooks, extra arguments.
"""

from __future__ import annotations

from typing import Any

import torch
from peft.tuners.lora.layer import Linear as PeftLoraLinear


class _LoraLinearFn(torch.autograd.Function):
    """Every product in the input's dtype; the adapter's weights cast to it (a no-op in one dtype) and its
    gradients returned in the weights' own dtype."""

    @staticmethod
    def forward(ctx, x, weight, bias, a, b, scaling: float):
        x2 = x.reshape(-1, x.shape[-1])
        a_c, b_c = a.to(x.dtype), b.to(x.dtype)
        h = x2 @ a_c.t()
        y = torch.addmm(bias, x2, weight.t()) if bias is not None else x2 @ weight.t()
        y.addmm_(h, b_c.t(), alpha=scaling)
        ctx.save_for_backward(x2, h, weight, a_c, b_c)
        ctx.scaling, ctx.in_shape, ctx.adapter_dtype = scaling, x.shape, a.dtype
        return y.view(*x.shape[:-1], y.shape[-1])

    @staticmethod
    def backward(ctx, grad_y):
        x2, h, weight, a, b = ctx.saved_tensors
        s, dtype = ctx.scaling, ctx.adapter_dtype
        g = grad_y.reshape(-1, grad_y.shape[-1])
        need_x, need_w, need_bias, need_a, need_b, _ = ctx.needs_input_grad
        gh = (g @ b).mul_(s) if (need_x or need_a) else None
        grad_x = (g @ weight).addmm_(gh, a).view(ctx.in_shape) if need_x else None
        grad_w = g.t() @ x2 if need_w else None
        grad_bias = g.sum(0) if need_bias else None
        grad_a = (gh.t() @ x2).to(dtype) if need_a else None
        grad_b = (g.t() @ h).mul_(s).to(dtype) if need_b else None
        return grad_x, grad_w, grad_bias, grad_a, grad_b, None


_HALF = (torch.bfloat16, torch.float16)


class FastLoraLinear(PeftLoraLinear):
    """PEFT's LoRA ``Linear`` with the fused forward/backward above where it applies (see module doc)."""

    def _fast_adapter(self, x: torch.Tensor, args: tuple, kwargs: dict) -> str | None:
        """The one active plain-LoRA adapter if the fused path computes exactly PEFT's result, else None."""
        if args or kwargs or self.disable_adapters or self.merged or getattr(self, "fan_in_fan_out", False):
            return None
        active = self.active_adapters
        if len(active) != 1 or active[0] not in self.lora_A or active[0] in getattr(self, "lora_variant", {}):
            return None
        name = active[0]
        base, lora_a, lora_b = self.base_layer, self.lora_A[name], self.lora_B[name]
        if type(base) is not torch.nn.Linear or base._forward_hooks or base._forward_pre_hooks:
            return None
        if not isinstance(self.lora_dropout[name], torch.nn.Identity) or lora_b.bias is not None:
            return None
        if torch.is_autocast_enabled(x.device.type) or x.dtype != base.weight.dtype:
            return None
        same = lora_a.weight.dtype == lora_b.weight.dtype == x.dtype
        mixed = x.dtype in _HALF and lora_a.weight.dtype == lora_b.weight.dtype == torch.float32
        if not (same or mixed) or getattr(self, "cast_input_dtype_enabled", True) is False:
            return None
        return name

    def forward(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        name = self._fast_adapter(x, args, kwargs)
        if name is None:
            return super().forward(x, *args, **kwargs)
        base = self.base_layer
        return _LoraLinearFn.apply(x, base.weight, base.bias, self.lora_A[name].weight, self.lora_B[name].weight,
                                   float(self.scaling[name]))


def use_fast_lora(model: torch.nn.Module) -> int:
    """Switch every PEFT LoRA ``Linear`` under ``model`` to ``FastLoraLinear``; returns how many.

    Only the class changes (same parameters, state dict, adapter files, ``isinstance`` checks), so
    saving, merging and loading the adapter are untouched.
    """
    n = 0
    for module in model.modules():
        if type(module) is PeftLoraLinear:
            module.__class__ = FastLoraLinear
            n += 1
    return n
