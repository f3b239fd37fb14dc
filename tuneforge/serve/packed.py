"""Serve float32 and bfloat16 Linear layers on the CPU from oneDNN's prepacked weights.

A decoding step multiplies a few rows (one per running request) by every weight matrix. For those
shapes PyTorch's default CPU path (MKL's GEMM on a plain ``[out, in]`` weight) is slow as soon as there
is more than one row: on the 2-core AMD EPYC, one thread, SmolLM2-135M's 211 block matrices and its
head cost 40 ms at 1 row, 75 ms at 2 rows, 92 ms at 8 and 167 ms at 32 through ``F.linear``, and 41 /
45 / 69 / 149 ms through oneDNN with the weights reordered once into its blocked layout (the kernel
PyTorch's own ``torch.compile`` freezing path picks on CPU). The same float32 arithmetic, summed in
another order: outputs differ from ``F.linear`` by float rounding only.

On that CPU (12-03's; it had no AVX512-BF16, its other flags were not recorded) a float32 oneDNN call costs
~25 us more than ``F.linear`` whatever its size, which the small matrices do not earn back: the engine packs
only those of at least ``MIN_WEIGHTS[float32]`` weights (2 MB: SmolLM2's MLP and head; its attention
projections stay plain). Whole decoding steps of the real model, in one process, median of 4
(``bench.serve_steps`` measures the same): 1 row 54.8 ms plain, 57.5 all packed, 53.9 large ones packed; 8
rows 110 / 93 / 90; 32 rows 197 / 188 / 182; a 20-token prefill 122 / 115 / 114. On a Zen 4 core (AVX-512,
PyTorch's AVX512 kernels) oneDNN wins at the small shapes too, the attention projections included, so every
float32 layer is packed where PyTorch runs AVX-512 kernels (:func:`min_weights`; an AVX-512 CPU without
bfloat16 was not measured; engine steps, alternated in one process, median of 12, thread CPU: 1 row 51.3 ms
large ones packed / 51.3 all packed, 8 rows 65.8 / 61.1, 32 rows 146.4 / 139.7, a prefill of bench.serve's
prompts 87.4 / 80.1).

bfloat16 ``F.linear`` already runs on oneDNN, but reorders the plain weight into its blocked layout at
every call: packed once, every bfloat16 layer is quicker, the small ones too (the same sums, bit for bit;
SmolLM2's shapes on a Zen 4 core with AVX512-BF16, one thread: 576 x 192 1.4x, the MLP's 1.4-2.0x at 1 and
8 rows and 1.2x at 32, the head 1.8x / 1.9x / 1.4x), so the engine packs all of them
(``MIN_WEIGHTS[bfloat16]``), where the CPU multiplies bfloat16 natively (:func:`native_bf16`).

Only the serving engine uses this, on a model that is never trained. :func:`pack_linears` swaps each
plain ``nn.Linear`` for a :class:`PackedLinear`, which still is an ``nn.Linear`` (so PEFT wraps it when a
LoRA adapter loads later and adds its low-rank delta to its output) and whose ``weight`` is a
zero-stride placeholder of the right shape, dtype and device, so the packed copy replaces the plain
weights instead of doubling them. A weight another module shares (a head tied to the input embedding)
stays as it is and the packed copy comes on top. Adapters that must read the base weights themselves
(DoRA's weight norm, a merge) would read the placeholder: before the engine loads one of those it puts
the plain layers back (:func:`unpack_linears`) and serves unpacked from then on.
"""

from __future__ import annotations

import torch
from torch import nn

from tuneforge.models.load import native_bf16

# the smallest Linear layer packed, in weights, by dtype (the module docstring says why they differ): on a CPU
# without AVX-512, and where it has it
MIN_WEIGHTS: dict[torch.dtype, int] = {torch.float32: 1 << 19, torch.bfloat16: 0}
MIN_WEIGHTS_AVX512: dict[torch.dtype, int] = {**MIN_WEIGHTS, torch.float32: 0}


def min_weights() -> dict[torch.dtype, int]:
    """The bounds for this CPU: :data:`MIN_WEIGHTS_AVX512` where PyTorch runs AVX-512 kernels, else
    :data:`MIN_WEIGHTS`."""
    return MIN_WEIGHTS_AVX512 if torch.backends.cpu.get_cpu_capability().startswith("AVX512") else MIN_WEIGHTS


def available() -> bool:
    """oneDNN is compiled into this PyTorch (it is in the x86/ARM CPU wheels)."""
    return torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")


class PackedLinear(nn.Linear):
    """``y = x W^T + b`` with ``W`` held in oneDNN's blocked layout; any leading batch dimensions."""

    def __init__(self, linear: nn.Linear, keep_weight: bool) -> None:
        nn.Module.__init__(self)
        self.in_features, self.out_features = linear.in_features, linear.out_features
        weight = linear.weight.detach()
        self.packed = torch.ops.mkldnn._reorder_linear_weight(weight, None)
        # nn.Linear's attribute, for the code that reads it (PEFT takes its shape, dtype and device)
        self.placeholder = not keep_weight
        self.weight = linear.weight if keep_weight else nn.Parameter(
            weight.new_zeros(()).expand(weight.shape), requires_grad=False)
        self.bias = linear.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ops.mkldnn._linear_pointwise(x, self.packed, self.bias, "none", [], "")


def pack_linears(model: nn.Module, min_weights: int | dict[torch.dtype, int] = 0) -> int:
    """Swap every float32 (and, where the CPU has :func:`native_bf16`, bfloat16) CPU ``nn.Linear`` of
    ``model`` with at least ``min_weights`` weights (one bound, or one per dtype: :func:`min_weights`) for a
    :class:`PackedLinear`; returns how many."""
    if not available():
        return 0
    bounds = dict(min_weights) if isinstance(min_weights, dict) else dict.fromkeys(MIN_WEIGHTS, min_weights)
    if not native_bf16():
        bounds.pop(torch.bfloat16, None)
    shared = _shared_weights(model)
    swaps = [(name, module) for name, module in model.named_modules()
             if type(module) is nn.Linear and module.weight.device.type == "cpu"
             and module.weight.numel() >= bounds.get(module.weight.dtype, float("inf"))]
    for name, module in swaps:
        parent, _, child = name.rpartition(".")
        owner = model.get_submodule(parent) if parent else model
        setattr(owner, child, PackedLinear(module, keep_weight=id(module.weight) in shared))
    return len(swaps)


def unpack_linears(model: nn.Module) -> int:
    """Put a plain ``nn.Linear`` (its weight read back from the packed copy) where each :class:`PackedLinear`
    is, wherever it is now (a PEFT layer's ``base_layer`` included); returns how many."""
    swaps = [(name, module) for name, module in model.named_modules() if isinstance(module, PackedLinear)]
    for name, module in swaps:
        parent, _, child = name.rpartition(".")
        plain = nn.Linear(module.in_features, module.out_features, bias=module.bias is not None, device="meta")
        plain.weight = (nn.Parameter(module.packed.to_dense(), requires_grad=False) if module.placeholder
                        else module.weight)
        plain.bias = module.bias
        setattr(model.get_submodule(parent) if parent else model, child, plain)
    return len(swaps)


def _shared_weights(model: nn.Module) -> set[int]:
    """ids of the parameters that more than one module holds (tied embeddings and heads)."""
    seen: dict[int, int] = {}
    for module in model.modules():
        for param in module.parameters(recurse=False):
            seen[id(param)] = seen.get(id(param), 0) + 1
    return {key for key, count in seen.items() if count > 1}
