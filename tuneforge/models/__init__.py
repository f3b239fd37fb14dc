"""Loading base models: bundled defaults, local Hugging Face folders and GGUF files."""

from tuneforge.models.bundled import BUNDLED, bundled_gguf_path
from tuneforge.models.load import (
    attach_adapter,
    bundled_cache_folder,
    load_model,
    load_tokenizer,
    native_bf16,
    resolve_device,
    resolve_dtype,
    resolve_model,
)

__all__ = [
    "BUNDLED",
    "attach_adapter",
    "bundled_cache_folder",
    "bundled_gguf_path",
    "load_model",
    "load_tokenizer",
    "native_bf16",
    "resolve_device",
    "resolve_dtype",
    "resolve_model",
]
