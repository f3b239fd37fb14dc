"""Load base models and tokenizers from a bundled name, a local Hugging Face folder or a GGUF file.

One entry point, :func:`load_model`, so that every stage (train, eval, rag, serve) loads models the same
way. Nothing here reaches a hub: names that are not bundled must be local paths. ``trust_remote_code``
is off unless the recipe turns it on, and weights are read from safetensors only (never unpickled).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

from tuneforge import atomic
from tuneforge.errors import UserError
from tuneforge.models.bundled import BUNDLED, bundled_gguf_path
from tuneforge.models.cache import cache_root, file_lock, sha256_file, verify_checksums, write_checksums

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

    from tuneforge.config.recipe import ModelConfig

log = logging.getLogger(__name__)


def convert_gguf(gguf: Path) -> Path:
    """Dequantise a GGUF file once into a safetensors folder under the cache; return that folder."""
    digest = sha256_file(gguf)
    target = cache_root() / "models" / f"{gguf.stem}-{digest[:16]}"
    if (target / "checksums.json").is_file():
        return target
    with file_lock(target.with_suffix(".lock")):
        if (target / "checksums.json").is_file():  # another process finished it while we waited
            return target
        from transformers import AutoModelForCausalLM, AutoTokenizer

        log.info("converting %s to safetensors in %s (once)", gguf.name, target)
        print(f"tuneforge: converting {gguf.name} to a safetensors cache (once, ~1 minute) -> {target}")
        tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        # The folder holds plain dequantised weights: it must not claim to be GGUF-quantised.
        # GGUF weights are already dequantised to fp32 in memory; drop the quantizer marker so that
        # save_pretrained writes a plain, unquantised folder.
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.hf_quantizer = None
        model.is_quantized = False
        model.config.name_or_path = gguf.stem
        with atomic.replace_folder(target) as tmp:  # every file fsynced before the folder appears
            model.save_pretrained(tmp, safe_serialization=True)
            tokenizer.save_pretrained(tmp)
            (tmp / "SOURCE").write_text(f"{gguf}\nsha256 {digest}\n")
            write_checksums(tmp)
    return target


def resolve_model(name: str) -> Path:
    """Turn a model spec into a local Hugging Face folder (converting GGUF once)."""
    if name in BUNDLED:
        folder = convert_gguf(bundled_gguf_path(name))
        verify_checksums(folder)
        return folder
    path = Path(name).expanduser()
    if path.is_file() and path.suffix == ".gguf":
        folder = convert_gguf(path)
        verify_checksums(folder)
        return folder
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise UserError(f"{path}: not a Hugging Face model folder (no config.json)")
        return path
    known = ", ".join(BUNDLED)
    raise UserError(
        f"model {name!r} not found: give a bundled name ({known}), a local model folder or a .gguf file "
        "(nothing is downloaded from a hub)"
    )


def load_tokenizer(name: str, trust_remote_code: bool = False) -> PreTrainedTokenizerBase:
    """The model's tokenizer, with its chat template and a pad token."""
    from transformers import AutoTokenizer

    folder = resolve_model(name)
    tok = AutoTokenizer.from_pretrained(str(folder), trust_remote_code=trust_remote_code)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def resolve_device(device: str = "auto") -> torch.device:
    import torch

    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        return torch.device(device)
    except RuntimeError:
        raise UserError(f"unknown device {device!r}: use auto, cpu, cuda, cuda:N or mps") from None


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    import torch

    if dtype == "auto":
        if device.type == "cuda" and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return torch.float32
    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[dtype]


def load_model(
    config: ModelConfig | str,
    *,
    adapter: str | None = None,
    device: str | None = None,
    dtype: str | None = None,
    is_trainable: bool = False,
) -> PreTrainedModel:
    """Load a causal LM (and optionally a PEFT adapter on top), in eval mode unless is_trainable."""
    from transformers import AutoModelForCausalLM

    from tuneforge.config.recipe import ModelConfig

    cfg = ModelConfig(name=config) if isinstance(config, str) else config
    adapter = adapter if adapter is not None else cfg.adapter
    dev = resolve_device(device or cfg.device)
    torch_dtype = resolve_dtype(dtype or cfg.dtype, dev)
    folder = resolve_model(cfg.name)
    kwargs: dict = {"dtype": torch_dtype, "trust_remote_code": cfg.trust_remote_code, "use_safetensors": True}
    if cfg.attn_implementation != "auto":
        kwargs["attn_implementation"] = cfg.attn_implementation
    try:
        model = AutoModelForCausalLM.from_pretrained(str(folder), **kwargs)
    except OSError as exc:
        raise UserError(f"{folder}: cannot load model weights ({exc})") from None
    if adapter:
        model = attach_adapter(model, adapter, is_trainable=is_trainable)
    model.to(dev)
    if not is_trainable:
        model.eval()
    return model


def attach_adapter(model: PreTrainedModel, adapter: str, is_trainable: bool = False) -> PreTrainedModel:
    from peft import PeftModel

    path = Path(adapter)
    if not (path / "adapter_config.json").is_file():
        raise UserError(f"{path}: not a PEFT adapter folder (no adapter_config.json)")
    return PeftModel.from_pretrained(model, str(path), is_trainable=is_trainable)
