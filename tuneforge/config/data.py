"""The ``data`` section of a recipe: where raw or prepared data comes from and how it is prepared."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from tuneforge.config.base import Section

TemplateArg = str | int | float | bool | list[str] | dict[str, str]


class DataConfig(Section):
    """Data preparation: read, convert with a template, validate, split."""

    path: str = Field(
        ...,
        description="Input data: a JSONL/JSON/CSV/TSV/Parquet file (optionally .gz/.bz2), a datasets "
        "save_to_disk folder, a folder with prepared train/val/test.jsonl, or a bundled dataset name "
        "(rotten-tomatoes, drug-reviews).",
    )
    format: Literal["auto", "chat", "alpaca", "sharegpt", "prompt_completion", "raw"] = Field(
        "auto", description="Record format. auto detects chat/alpaca/sharegpt/prompt_completion; raw needs a template."
    )
    template: str | None = Field(
        None,
        description="Template turning raw records into instruction pairs: a built-in name (see "
        "`tuneforge data templates`) or a user template file (.yaml with Jinja2 prompt/response).",
    )
    template_args: dict[str, TemplateArg] = Field(
        default_factory=dict,
        description="Arguments for the template: field names (text_field, label_field, ...), label_set, "
        "label_map, languages.",
    )
    split: str | None = Field(
        None, description="Which split of a datasets save_to_disk DatasetDict to read (default: train or the only one)."
    )
    max_examples: int | None = Field(None, ge=1, description="Keep at most this many examples (after shuffling by hash).")
    val_fraction: float = Field(0.1, ge=0.0, lt=1.0, description="Share of examples in the validation split.")
    test_fraction: float = Field(0.1, ge=0.0, lt=1.0, description="Share of examples in the test split.")
    stratify_by: str | None = Field(
        None, description="Stratify the split by this meta field (only 'label' is meaningful for now)."
    )
    max_length: int = Field(1024, ge=16, description="Maximum tokens per example; longer ones are dropped and reported.")
    system_prompt: str | None = Field(None, description="Optional system message prepended to every example.")
    strict: bool = Field(False, description="Turn every data-quality problem into a failure.")
    redact_pii: bool = Field(
        False, description="Replace e-mails, phone and card numbers, IBANs, US SSNs, IP addresses and secrets (API "
        "keys, tokens, private keys) with placeholders, everywhere in the output folder.",
    )
    dedupe: bool = Field(True, description="Drop exact duplicate examples (the first is kept; each drop is counted).")
    drop_low_information: bool = Field(
        True, description="Drop examples whose answer carries no information ('ok', 'will do', 'thanks')."
    )
    max_line_bytes: int = Field(
        8_000_000, ge=1024, description="Longest accepted input line/record in bytes; longer ones are malformed."
    )
