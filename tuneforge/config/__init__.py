"""Recipes: YAML files validated by typed models (pydantic), with CLI overrides.

Every recipe section's schema lives here (``config/data.py``, ``train.py``, ``eval.py``, ``rag.py``,
``serve.py``, ``export.py``, ``strategies.py``), so loading a recipe imports no stage package (and no
torch); stage packages import their section from here, never the reverse.
"""

from tuneforge.config.loader import apply_overrides, dump_recipe, load_recipe, parse_override
from tuneforge.config.recipe import ModelConfig, Recipe, RunConfig

__all__ = ["ModelConfig", "Recipe", "RunConfig", "apply_overrides", "dump_recipe", "load_recipe", "parse_override"]
