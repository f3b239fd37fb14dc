"""The ``export`` section of a recipe (``tuneforge export RUN``)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from tuneforge.config.base import Section


class ExportConfig(Section):
    """Merge a tuned run into standalone weights, optionally int8 and GGUF copies."""

    output_dir: str | None = Field(
        None, description="Where the exported files go. Default: <run>/export."
    )
    dtype: Literal["float32", "bfloat16", "float16"] = Field(
        "float32", description="Dtype of the merged safetensors weights."
    )
    tolerance: float | None = Field(
        None, gt=0,
        description="Largest allowed |merged - (base+adapter)| logit difference, relative to the largest "
        "reference logit. Default by dtype: float32 1e-4, float16 5e-3, bfloat16 5e-2.",
    )
    int8: bool = Field(
        False, description="Also write an int8 weight-only copy for CPU serving (tuneforge serve loads it)."
    )
    engine: Literal["transformers", "vllm"] = Field(
        "transformers", description="Who serves the export: transformers (a merged Hugging Face folder, plus int8 "
        "and GGUF copies on request) or vllm (a LoRA adapter vLLM accepts kept as an adapter, anything else "
        "merged; with serve.sh), under <output_dir>/vllm.",
    )
    gguf: Literal["f32", "f16", "q8_0"] | None = Field(
        None, description="Also write a GGUF file of this type for llama.cpp-family runtimes (Llama-family models)."
    )
