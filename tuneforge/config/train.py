"""The ``train`` section of a recipe: method, optimisation, batching and checkpoints."""

from __future__ import annotations

import math
from typing import Literal

from pydantic import Field

from tuneforge.config.base import Section

# Methods that train a PEFT adapter (saved as adapter/) rather than the model's own weights (model/).
PEFT_METHODS = ("lora", "qlora", "ia3", "prompt_tuning", "prefix_tuning")
# PEFT methods that prepend virtual tokens instead of changing weights.
PROMPT_LEARNING_METHODS = ("prompt_tuning", "prefix_tuning")


class LoraConfig(Section):
    """LoRA / DoRA / rsLoRA settings (PEFT)."""

    r: int = Field(16, ge=1, description="Rank of the low-rank update.")
    alpha: int = Field(32, ge=1, description="Scaling numerator: the update is scaled by alpha/r (alpha/sqrt(r) with rslora).")
    dropout: float = Field(
        0.0, ge=0.0, lt=1.0,
        description="Dropout on the LoRA input. Off by default (as in PEFT): on a CPU it cost 31% of the "
        "tokens/s and 170 MB at 192-token rows (BENCHMARKS.md); 0.05-0.1 regularises small datasets.",
    )
    target_modules: list[str] | str = Field(
        "all-linear", description="Module names to adapt, or all-linear for every linear layer but the head."
    )
    use_dora: bool = Field(False, description="Weight-decomposed LoRA (DoRA).")
    use_rslora: bool = Field(False, description="Rank-stabilised scaling alpha/sqrt(r).")


class PromptConfig(Section):
    """Prompt tuning / prefix tuning settings (PEFT)."""

    num_virtual_tokens: int = Field(20, ge=1, description="Learned virtual tokens prepended to every input.")
    init_text: str | None = Field(
        None, description="Prompt tuning only: initialise the virtual tokens from this text (random otherwise)."
    )


class FreezeConfig(Section):
    """Method freeze: every weight is frozen except the ones named here."""

    trainable_modules: list[str] = Field(
        default_factory=list,
        description="Parameter-name fragments to train (e.g. [lm_head, norm]); a parameter trains if its name contains one.",
    )
    top_blocks: int | None = Field(
        None, ge=1, description="Also train the last N transformer blocks (and the final norm)."
    )


class TrainConfig(Section):
    """Supervised fine-tuning."""

    method: Literal["full", "lora", "qlora", "ia3", "prompt_tuning", "prefix_tuning", "freeze"] = Field(
        "lora", description="full: all weights; lora/qlora: low-rank adapters; ia3; prompt/prefix tuning; freeze: train named modules only."
    )
    lora: LoraConfig = Field(default_factory=LoraConfig, description="LoRA settings (method lora/qlora).")
    prompt: PromptConfig = Field(default_factory=PromptConfig, description="Prompt/prefix tuning settings.")
    freeze: FreezeConfig = Field(default_factory=FreezeConfig, description="What trains with method freeze.")
    learning_rate: float = Field(2e-4, gt=0, description="Peak learning rate.")
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay (not applied to biases and norms).")
    adam_betas: tuple[float, float] = Field((0.9, 0.999), description="AdamW betas.")
    epochs: float = Field(1.0, gt=0, description="Passes over the training data (ignored when max_steps is set).")
    max_steps: int | None = Field(None, ge=1, description="Stop after this many optimizer steps.")
    batch_size: int = Field(8, ge=1, description="Examples (or packed sequences) per device per micro-batch.")
    grad_accum: int = Field(1, ge=1, description="Micro-batches per optimizer step.")
    max_grad_norm: float = Field(1.0, ge=0, description="Gradient clipping norm; 0 disables.")
    warmup_ratio: float = Field(0.03, ge=0, lt=1, description="Share of steps with linear warmup.")
    scheduler: Literal["cosine", "linear", "constant"] = Field("cosine", description="Learning-rate schedule after warmup.")
    max_length: int = Field(1024, ge=16, description="Truncate tokenized examples to this many tokens.")
    packing: bool = Field(True, description="Pack several examples per sequence (attention stays within each example).")
    group_by_length: bool = Field(True, description="Batch sequences of similar length together to cut padding.")
    train_on: Literal["all_assistant", "last_assistant"] = Field(
        "all_assistant", description="Which assistant turns carry the loss (prompts never do)."
    )
    eval_every: int = Field(50, ge=1, description="Validate every N optimizer steps.")
    eval_at_start: bool = Field(True, description="Measure validation loss before the first step.")
    save_every: int = Field(100, ge=1, description="Checkpoint every N optimizer steps.")
    keep_checkpoints: int = Field(2, ge=1, description="Keep the last K checkpoints (plus the best).")
    load_best_at_end: bool = Field(True, description="Export the weights with the lowest validation loss, not the last.")
    log_every: int = Field(10, ge=1, description="Write the training loss to metrics.jsonl every N steps.")
    gradient_checkpointing: bool = Field(False, description="Recompute activations in backward to save memory.")
    mixed_precision: Literal["auto", "no", "bf16", "fp16"] = Field(
        "auto", description="auto: bf16 on capable GPUs, none on CPU. bf16 on a CPU with AVX512-BF16 or AMX: "
        "autocast over float32 weights and optimizer (a LoRA step 1.17x float32's on a Zen 4 core; for LoRA, "
        "model.dtype: bfloat16 is quicker and smaller, BENCHMARKS.md).")
    early_stopping_patience: int | None = Field(None, ge=1, description="Stop after N validations without improvement.")
    num_threads: int | None = Field(None, ge=1, description="torch CPU threads (default: torch's choice, one per core).")
    memory_limit_gb: float | None = Field(
        None, gt=0, description="Memory the run may use (GB, 2^30 bytes): the plan's estimate stays 5% under it, "
        "for the estimate's error; default: 85% of the free RAM (CPU) or free GPU memory."
    )
    distributed: Literal["auto", "fsdp"] = Field(
        "auto", description="With several processes (torchrun / accelerate launch): auto keeps what the launcher set "
        "up (DDP, or accelerate's FSDP/DeepSpeed on GPUs); fsdp shards weights, gradients and optimizer state over "
        "the processes with PyTorch FSDP2 (fully_shard), on CPUs (gloo) too, with resumable sharded checkpoints.",
    )
    resume: bool = Field(
        False, description="Continue the run folder run.name from its newest complete checkpoint (from step 0 "
        "if it has none yet; straight to evaluation if its training had finished).",
    )

    # Derived values live here, once, instead of being threaded through the call levels as flags.
    @property
    def is_peft(self) -> bool:
        """The method trains a PEFT adapter (``adapter/``), not the model's own weights (``model/``)."""
        return self.method in PEFT_METHODS

    @property
    def prompt_learning(self) -> bool:
        """Prompt/prefix tuning: virtual tokens live in the PEFT wrapper, not in the wrapped model."""
        return self.method in PROMPT_LEARNING_METHODS

    @property
    def packs(self) -> bool:
        """Packing is on and allowed: prompt/prefix tuning need every example to see the virtual tokens."""
        return self.packing and not self.prompt_learning

    def steps_per_epoch(self, n_rows: int, world: int = 1) -> int:
        """Optimizer steps in one pass over ``n_rows`` rows with ``world`` processes."""
        return math.ceil(math.ceil(n_rows / (self.batch_size * world)) / self.grad_accum)

    def total_steps(self, n_rows: int, world: int = 1) -> int:
        """Optimizer steps of the whole run: ``max_steps`` when set, else ``epochs`` passes."""
        if self.max_steps:
            return self.max_steps
        return max(1, math.ceil(self.epochs * self.steps_per_epoch(n_rows, world)))
