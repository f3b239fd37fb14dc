"""Recipes: YAML files validated by typed models (pydantic), with CLI overrides.

Names are resolved lazily: every stage's ``config.py`` imports ``tuneforge.config.base``, and the recipe
imports every stage's section, so an eager import here would be circular.
"""

from __future__ import annotations

from typing import Any

_EXPORTS = {
    "apply_overrides": "tuneforge.config.loader",
    "dump_recipe": "tuneforge.config.loader",
    "load_recipe": "tuneforge.config.loader",
    "parse_override": "tuneforge.config.loader",
    "ModelConfig": "tuneforge.config.recipe",
    "Recipe": "tuneforge.config.recipe",
    "RunConfig": "tuneforge.config.recipe",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(name)
