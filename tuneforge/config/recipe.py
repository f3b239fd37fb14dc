"""The recipe: one typed document describing a run, composed of one section per lifecycle stage.

Each section's schema has its own module beside this one (``config/data.py``, ``config/train.py``, ...);
this module composes them and holds the two sections every command shares: ``model`` and ``run``.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from tuneforge.config.base import Section, check_folder_name, check_unique
from tuneforge.config.data import DataConfig
from tuneforge.config.eval import EvalConfig
from tuneforge.config.export import ExportConfig
from tuneforge.config.rag import RagConfig
from tuneforge.config.serve import ServeConfig
from tuneforge.config.strategies import MixtureConfig, StageConfig, TuneConfig
from tuneforge.config.train import TrainConfig

BUNDLED_DEFAULT = "smollm2-135m-instruct"


class ModelConfig(Section):
    """Which base model to load and how."""

    name: str = Field(
        BUNDLED_DEFAULT,
        description="A bundled model name (smollm2-135m-instruct; gemma3-270m, a base model; "
        "`tuneforge models` lists them), a local Hugging Face folder "
        "(config.json + safetensors) or a local .gguf file.",
    )
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto", description="Weight dtype. auto: bfloat16 on a GPU that supports it, float32 on CPU."
    )
    device: str = Field("auto", description="auto, cpu, cuda, cuda:N or mps.")
    adapter: str | None = Field(
        None, description="Optional PEFT adapter folder applied on top of the base model."
    )
    trust_remote_code: bool = Field(
        False, description="Allow a model folder to run its own Python code. Off: only enable for folders you trust."
    )
    attn_implementation: Literal["auto", "eager", "sdpa", "flash_attention_2", "varlen"] = Field(
        "auto", description="Attention kernel. auto: sdpa, except training on a CUDA GPU, which uses varlen for "
        "the model types it suits (Llama, Mistral, Qwen2/3, Gemma, Gemma 3, Phi-3, OLMo, SmolLM3). "
        "varlen: PyTorch's variable-length flash-attention kernel (CUDA, torch >= 2.10), one causal attention "
        "per packed example instead of a masked [row x row] one; for training and scoring only (the trained "
        "model returns to sdpa for generation).",
    )


class RunConfig(Section):
    """Where the run folder goes and what makes it reproducible."""

    name: str | None = Field(
        None, description="Run folder name under output_dir (one plain folder name: letters, digits, '-', '_', '.'). "
        "Default: <command>-<timestamp>.",
    )
    output_dir: str = Field("runs", description="Parent folder of run folders.")
    seed: int = Field(42, description="Seed for Python, NumPy and torch RNGs and for data splits.")

    _name = field_validator("name")(check_folder_name)  # the folder must stay inside output_dir


class Recipe(Section):
    """A tuneforge recipe. Every section is optional; missing sections take their defaults."""

    model: ModelConfig = Field(default_factory=ModelConfig, description="Base model.")
    run: RunConfig = Field(default_factory=RunConfig, description="Run folder and seed.")
    data: DataConfig | None = Field(None, description="Data preparation (tuneforge data).")
    train: TrainConfig = Field(default_factory=TrainConfig, description="Fine-tuning (tuneforge train).")
    eval: EvalConfig = Field(default_factory=EvalConfig, description="Evaluation (tuneforge eval).")
    rag: RagConfig = Field(default_factory=RagConfig, description="Retrieval-augmented generation.")
    serve: ServeConfig = Field(default_factory=ServeConfig, description="HTTP serving (tuneforge serve).")
    export: ExportConfig = Field(default_factory=ExportConfig, description="Merge and export (tuneforge export).")
    mixture: MixtureConfig | None = Field(None, description="Multi-task training: tasks and mixing weights.")
    stages: list[StageConfig] | None = Field(None, description="Sequential fine-tuning: ordered stages (tuneforge stages).")
    tune: TuneConfig | None = Field(None, description="Hyperparameter search space (tuneforge tune).")

    @field_validator("stages")
    @classmethod
    def _unique_stages(cls, v: list[StageConfig] | None) -> list[StageConfig] | None:
        if v:
            check_unique([s.name for s in v], "stage")
        return v
