"""Int8 weight-only quantization for CPU serving.

Every ``nn.Linear`` inside the transformer blocks, and the output head, is stored as int8 with one
float32 scale per output channel (symmetric, ``w ~= q * scale``, ``q`` in [-127, 127]); embeddings and
norms stay in float32 (an embedding lookup reads one row per token; norms are small). Weights stay int8
in memory: about 4x smaller than float32.

The head matters most when serving: every decoding step multiplies each row by the whole
``[vocab x hidden]`` head (SmolLM2: 28M of its 135M weights), and a float32 head at 8 rows took more
time than all the int8 blocks together. A tied head (one tensor with the input embedding) is stored
as its own int8 copy; the float32 embedding stays for the lookups. Folders written before the head was
quantized (no ``lm_head`` in the marker's modules) load as they were.

At run time, float32 activations on the CPU go through PyTorch's dynamic int8 Linear (fbgemm/x86: the
same int8 weights and scales, packed once; each call quantizes its activations per tensor and multiplies
in int8). ``torch._weight_int8pack_mm``, the weight-only kernel this module used first, was 0.01-0.23x
fp32 speed on the x86 CPUs measured (``python -m bench.int8_kernels``), dynamic int8 1.3-2.9x faster than
fp32 at 8-32 rows, so serving an int8 export was slower than serving fp32. Activation quantization
costs a little accuracy (logits within 3% of the dequantised weights and the same greedy answers, tested);
bfloat16/float16 activations still use the weight-only kernel, other devices a dequantised matmul.

The folder is *not* a standard transformers quantization format: it holds ``config.json``, the
tokenizer, ``model.safetensors`` and ``tuneforge_int8.json``. Load it with :func:`load_int8_model`
(``tuneforge serve --model FOLDER`` does this automatically).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

from tuneforge import atomic
from tuneforge.errors import UserError

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel

MARKER = "tuneforge_int8.json"


def quantize_weight(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric per-output-channel int8: returns (int8 [out, in], float32 scale [out])."""
    import torch

    w = weight.detach().float()
    scale = w.abs().amax(dim=1).clamp(min=1e-12) / 127.0
    q = torch.round(w / scale[:, None]).clamp(-127, 127).to(torch.int8)
    return q.contiguous(), scale.contiguous()


def _int8_linear_class():
    import torch
    from torch import nn

    class Int8Linear(nn.Module):
        """A Linear whose weight stays int8 in memory (CPU int8 kernel; dequantised matmul elsewhere)."""

        def __init__(self, qweight: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor | None) -> None:
            super().__init__()
            self.in_features = qweight.shape[1]
            self.out_features = qweight.shape[0]
            self.register_buffer("qweight", qweight)
            self.register_buffer("scale", scale)
            self.bias = nn.Parameter(bias, requires_grad=False) if bias is not None else None

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            shape = x.shape
            x2 = x.reshape(-1, shape[-1])
            packed = self._packed() if x2.device.type == "cpu" and x2.dtype == torch.float32 else None
            if packed is not None:  # bias is inside the packed weight
                return torch.ops.quantized.linear_dynamic(x2.contiguous(), packed, True).reshape(
                    *shape[:-1], self.out_features)
            if x2.device.type == "cpu" and x2.dtype in (torch.bfloat16, torch.float16):
                y = torch._weight_int8pack_mm(x2.contiguous(), self.qweight, self.scale.to(x2.dtype))
            else:
                y = x2 @ (self.qweight.to(x2.dtype) * self.scale.to(x2.dtype)[:, None]).T
            if self.bias is not None:
                y = y + self.bias
            return y.reshape(*shape[:-1], self.out_features)

        def _packed(self):
            """The weights packed for the dynamic int8 kernel, once per weight tensor (None where this
            torch has no quantized CPU engine: the caller then takes the dequantised path)."""
            key = (self.qweight.data_ptr(), self.scale.data_ptr())
            cached = self.__dict__.get("_packed_cache")
            if cached is not None and cached[0] == key:
                return cached[1]
            packed = _pack_dynamic(self.qweight, self.scale, self.bias)
            self.__dict__["_packed_cache"] = (key, packed)
            return packed

    return Int8Linear


def _pack_dynamic(qweight: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor | None):
    """fbgemm's packed form of int8 weights with per-output-channel scales (no copy of the values made
    here besides the packing itself), or None when the quantized CPU ops are missing."""
    import warnings

    import torch

    try:
        with warnings.catch_warnings():  # quantized tensor creation is marked deprecated in torch 2.10+
            warnings.simplefilter("ignore")
            qt = torch._make_per_channel_quantized_tensor(
                qweight, scale.double(), torch.zeros_like(scale, dtype=torch.long), 0)
            return torch.ops.quantized.linear_prepack(qt, None if bias is None else bias.detach().float())
    except (RuntimeError, AttributeError, NotImplementedError):
        return None


def _block_linears(model: PreTrainedModel) -> list[str]:
    """Names of the Linear modules inside the transformer blocks (not the embeddings or the head)."""
    from torch import nn

    layers_prefix = ".layers."
    return [n for n, m in model.named_modules() if isinstance(m, nn.Linear) and layers_prefix in f".{n}"]


def _head_name(model: PreTrainedModel) -> str | None:
    """The output head's module name when it is a plain Linear (None otherwise: it then stays float32)."""
    from torch import nn

    head = model.get_output_embeddings()
    if not isinstance(head, nn.Linear):
        return None
    return next((n for n, m in model.named_modules() if m is head), None)


def _set_module(model: PreTrainedModel, name: str, module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, module)


def save_int8(model: PreTrainedModel, tokenizer, out: Path) -> dict:
    """Quantize ``model``'s block Linears to int8 and write the folder; returns what was quantized."""
    import torch
    from safetensors.torch import save_file

    names = _block_linears(model)
    if not names:
        raise UserError("int8 export found no Linear layers under `.layers.`; this architecture is not supported")
    state = {k: v.detach().float().contiguous() for k, v in model.state_dict().items()}
    head = _head_name(model)
    if head is not None:
        names = [*names, head]
    for name in names:
        q, s = quantize_weight(state.pop(f"{name}.weight"))
        state[f"{name}.qweight"] = q
        state[f"{name}.scale"] = s
    # A float32 tied head shares storage with the embedding; safetensors refuses shared tensors, and the
    # tie is re-created on load from the config.
    if head is None and getattr(model.config, "tie_word_embeddings", False):
        state.pop("lm_head.weight", None)
    meta = {"format": "tuneforge-int8-weight-only", "granularity": "per-output-channel", "modules": names}
    # Written beside and renamed into place whole: a failed export leaves the previous copy, never a
    # half-written folder that still carries an older marker.
    with atomic.replace_folder(out) as tmp:
        save_file({k: v.clone() if v.dtype != torch.int8 else v for k, v in state.items()}, str(tmp / "model.safetensors"))
        model.config.save_pretrained(tmp)
        if getattr(model, "generation_config", None) is not None:
            model.generation_config.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / MARKER).write_text(json.dumps(meta, indent=1))
    return meta


def is_int8_folder(path: str | Path) -> bool:
    return (Path(path) / MARKER).is_file()


def load_int8_model(folder: str | Path, device: str = "cpu") -> PreTrainedModel:
    """Build the model from its config and load the int8 folder into it (float32 activations)."""
    import torch
    from safetensors.torch import load_file
    from transformers import AutoConfig, AutoModelForCausalLM

    folder = Path(folder)
    meta = json.loads((folder / MARKER).read_text())
    config = AutoConfig.from_pretrained(str(folder))
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    state = load_file(str(folder / "model.safetensors"), device=device)
    head = _head_name(model)
    head_int8 = head is not None and head in meta["modules"]  # its own int8 tensor: nothing to tie
    int8_linear = _int8_linear_class()
    for name in meta["modules"]:
        bias = state.get(f"{name}.bias")
        _set_module(model, name, int8_linear(state[f"{name}.qweight"], state[f"{name}.scale"], bias))
    missing, unexpected = model.load_state_dict(state, strict=False, assign=True)
    tied = bool(getattr(config, "tie_word_embeddings", False)) and not head_int8
    missing = [m for m in missing if not (m == "lm_head.weight" and tied)]
    if missing or unexpected:
        raise UserError(f"{folder}: int8 weights do not match the config (missing {missing[:3]}, unexpected {unexpected[:3]})")
    if tied:
        model.tie_weights()
    # Non-persistent buffers (rotary frequencies) were created on the meta device: rebuild the modules
    # that own them from their config (they hold no weights).
    for name, module in list(model.named_modules()):
        own_meta = any(b.is_meta for b in module.buffers(recurse=False))
        if own_meta and hasattr(module, "config") and not list(module.parameters(recurse=False)):
            with torch.device(device):
                _set_module(model, name, type(module)(module.config))
    leftover = [n for n, b in model.named_buffers() if b.is_meta]
    if leftover:
        raise UserError(f"{folder}: could not rebuild buffers {leftover[:3]} for this architecture")
    return model.eval()
