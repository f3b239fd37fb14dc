"""What an adapter folder holds, read from its ``adapter_config.json`` (PEFT's standard format)."""

from __future__ import annotations

import json
from pathlib import Path

# PEFT types that prepend virtual tokens instead of changing weights: nothing to merge, and a served
# request cannot share a batch with other adapters' rows.
PROMPT_LEARNING_TYPES = frozenset(
    {"PROMPT_TUNING", "P_TUNING", "PREFIX_TUNING", "MULTITASK_PROMPT_TUNING", "ADAPTION_PROMPT"}
)


def adapter_type(adapter: str | Path) -> str:
    """The adapter's PEFT type in upper case (``LORA``, ``IA3``, ``PREFIX_TUNING``, ...)."""
    cfg = json.loads((Path(adapter) / "adapter_config.json").read_text(encoding="utf-8"))
    return str(cfg.get("peft_type", "LORA")).upper()


def is_prompt_learning(adapter: str | Path) -> bool:
    return adapter_type(adapter) in PROMPT_LEARNING_TYPES
