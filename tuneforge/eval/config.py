"""The ``eval`` section of a recipe."""

from __future__ import annotations

from pydantic import Field

from tuneforge.config.base import Section


class EvalConfig(Section):
    """Evaluation on the test split, in-context baselines and forgetting probes."""

    max_new_tokens: int = Field(32, ge=1, description="Tokens to generate per test prompt.")
    batch_size: int = Field(16, ge=1, description="Prompts per generation batch.")
    max_examples: int | None = Field(None, ge=1, description="Evaluate at most this many test examples.")
    shots: list[int] = Field(default_factory=lambda: [0, 3], description="In-context baselines to run (0 = zero-shot).")
    forgetting: bool = Field(True, description="Run general-ability probes for the base and tuned model.")
