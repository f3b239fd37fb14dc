"""Int8 weight-only quantization for CPU serving.

Every ``nn.Linear`` inside the transformer blocks, and the output head, is stored as int8 with one
float32 scale per output channel (symmetric, ``w ~= q * scale``, ``q`` in [-127, 127]); norms stay in
float32 (small). The folder is about 4x smaller than float32; a CPU serving it holds the int8 values and
their float16 packing (3 bytes per weight against float32's 4).

The head matters most when serving: every decoding step multiplies each row by the whole
``[vocab x hidden]`` head (SmolLM2: 28M of its 135M weights), and a float32 head at 8 rows took more
time than all the int8 blocks together. A head tied to a plain input embedding is stored once, as
int8, and serves the lookups too (one int8 row per vocabulary entry, so a lookup dequantises the rows
it reads with their own scales); an embedding that transforms its rows (Gemma's scaled embedding)
stays float32 and the head gets its own int8 copy. Folders written before the head was quantized (no
head in the marker's modules) load as they were.

At run time, float32 activations on the CPU go through fbgemm's float16-weight GEMM
(``quantized::linear_dynamic_fp16``): the int8 values times their scales, packed once as float16, with
the activations kept in float32. It runs 1.5-2x faster than float32 at 8-32 rows (half the bytes
per weight, a kernel that is quick at few rows) and gives the int8 weights' own answers. PyTorch's
dynamic int8 Linear, used before, was another 1.5x faster but quantizes the activations, one scale per
tensor: SmolLM2's activations have outlier channels, and its top-1 token agreed with float32's on only
43% of positions (weight-only int8: 95%). ``torch._weight_int8pack_mm``, the weight-only int8 kernel,
is 0.01-0.23x float32 speed on x86 (``python -m bench.int8_kernels``); bfloat16/float16 activations
still use it, other devices a dequantised matmul.

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
                return torch.ops.quantized.linear_dynamic_fp16(x2.contiguous(), packed).reshape(
                    *shape[:-1], self.out_features)
            if x2.device.type == "cpu" and x2.dtype in (torch.bfloat16, torch.float16):
                y = torch._weight_int8pack_mm(x2.contiguous(), self.qweight, self.scale.to(x2.dtype))
            else:
                y = x2 @ (self.qweight.to(x2.dtype) * self.scale.to(x2.dtype)[:, None]).T
            if self.bias is not None:
                y = y + self.bias
            return y.reshape(*shape[:-1], self.out_features)

        def _packed(self):
            """The dequantised weights packed as float16 for fbgemm, once per weight tensor (None where this
            torch has no fbgemm: the caller then takes the dequantised float32 path)."""
            key = (self.qweight.data_ptr(), self.scale.data_ptr())
            cached = self.__dict__.get("_packed_cache")
            if cached is not None and cached[0] == key:
                return cached[1]
            packed = _pack_fp16(self.qweight, self.scale, self.bias)
            self.__dict__["_packed_cache"] = (key, packed)
            return packed

    return Int8Linear


def _int8_embedding_class():
    from torch import nn

    class Int8Embedding(nn.Module):
        """An embedding read from the int8 head it is tied to: a lookup dequantises only the rows it reads.
        The tensors are the head's own (non-persistent here: the folder stores them once, as the head)."""

        def __init__(self, qweight: torch.Tensor, scale: torch.Tensor, padding_idx: int | None) -> None:
            super().__init__()
            self.num_embeddings, self.embedding_dim = qweight.shape
            self.padding_idx = padding_idx
            self.register_buffer("qweight", qweight, persistent=False)
            self.register_buffer("scale", scale, persistent=False)

        def forward(self, ids: torch.Tensor) -> torch.Tensor:
            return self.qweight[ids].float() * self.scale[ids].unsqueeze(-1)

    return Int8Embedding


def _pack_fp16(qweight: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor | None):
    """fbgemm's packed float16 form of the dequantised int8 weights (``q * scale``: 7 significant bits
    times a scale, so float16 holds them to its rounding), or None when this torch lacks the op."""
    import torch

    try:
        weight = qweight.float() * scale.float()[:, None]
        return torch.ops.quantized.linear_prepack_fp16(weight, None if bias is None else bias.detach().float())
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


def _tied_embedding_name(model: PreTrainedModel) -> str | None:
    """The input embedding's module name when it is a plain ``nn.Embedding`` tied to a plain Linear head:
    then one int8 tensor serves both. (An embedding that scales or otherwise transforms its rows, such as
    Gemma's, stays float32 and the head gets its own int8 copy.)"""
    from torch import nn

    emb, head = model.get_input_embeddings(), model.get_output_embeddings()
    if type(emb) is not nn.Embedding or not isinstance(head, nn.Linear) or head.weight is not emb.weight:
        return None
    return next((n for n, m in model.named_modules() if m is emb), None)


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
    embedding = _tied_embedding_name(model) if head is not None else None
    if embedding is not None:  # the int8 head is the embedding too: stored once
        state.pop(f"{embedding}.weight")
    # A float32 tied head shares storage with the embedding; safetensors refuses shared tensors, and the
    # tie is re-created on load from the config.
    if head is None and getattr(model.config, "tie_word_embeddings", False):
        state.pop("lm_head.weight", None)
    meta = {"format": "tuneforge-int8-weight-only", "granularity": "per-output-channel", "modules": names,
            "embedding_from_head": embedding}
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
    if meta.get("embedding_from_head"):  # a tied embedding stored once, as the int8 head
        emb = model.get_submodule(meta["embedding_from_head"])
        _set_module(model, meta["embedding_from_head"], _int8_embedding_class()(
            state[f"{head}.qweight"], state[f"{head}.scale"], emb.padding_idx))
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
