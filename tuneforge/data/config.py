"""The ``data`` section of a recipe: where raw or prepared data comes from and how it is prepared."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from tuneforge.config.base import Section


class DataConfig(Section):
    """Data preparation: read, convert with a template, validate, split."""

    path: str = Field(
        ...,
        description="Input data: a JSONL/JSON/CSV/Parquet file, a datasets save_to_disk folder, or a "
        "bundled dataset name (rotten-tomatoes, drug-reviews).",
    )
    format: Literal["auto", "chat", "alpaca", "sharegpt", "prompt_completion", "raw"] = Field(
        "auto", description="Record format. auto detects chat/alpaca/sharegpt/prompt_completion; raw needs a template."
    )
    template: str | None = Field(
        None, description="Template turning raw records into instruction pairs (see `tuneforge data templates`)."
    )
    template_args: dict[str, str | int | float | bool | list[str]] = Field(
        default_factory=dict, description="Arguments for the template (field names, label set, ...)."
    )
    max_examples: int | None = Field(None, ge=1, description="Keep at most this many examples (after shuffling by hash).")
    val_fraction: float = Field(0.1, ge=0.0, lt=1.0, description="Share of examples in the validation split.")
    test_fraction: float = Field(0.1, ge=0.0, lt=1.0, description="Share of examples in the test split.")
    stratify_by: str | None = Field(None, description="Metadata field to stratify the split by (e.g. label).")
    max_length: int = Field(1024, ge=16, description="Maximum tokens per example; longer ones are reported.")
    system_prompt: str | None = Field(None, description="Optional system message prepended to every example.")
    strict: bool = Field(False, description="Turn every data-quality problem into a failure.")
    redact_pii: bool = Field(False, description="Replace e-mails, phone, card numbers and IBANs with placeholders.")
