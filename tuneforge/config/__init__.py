"""Recipes: YAML files validated by typed models (pydantic), with CLI overrides."""

from tuneforge.config.loader import apply_overrides, dump_recipe, load_recipe, parse_override
from tuneforge.config.recipe import ModelConfig, Recipe, RunConfig

__all__ = [
    "ModelConfig",
    "Recipe",
    "RunConfig",
    "apply_overrides",
    "dump_recipe",
    "load_recipe",
    "parse_override",
]
