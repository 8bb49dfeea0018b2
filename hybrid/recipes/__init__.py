"""The recipe language: YAML files that describe a hybrid model, checked before anything is built.

API::

    load_recipe(path, overrides=None) -> Recipe      # .name .path .model .layers .letters .train .eval
    load_sweep(path, overrides=None) -> list[Recipe]
    apply_overrides(recipe_dict, ["train.steps=100", "layout.ratio=1:1"]) -> dict

Errors are :class:`RecipeError` and print as ``file:line key.path: what was expected (did you mean ...)``.
See docs/recipes.md for the language.
"""

from hybrid.recipes.errors import Loc, RecipeError
from hybrid.recipes.load import Recipe, load_recipe, recipe_from_dict
from hybrid.recipes.merge import apply_overrides
from hybrid.recipes.sweep import is_sweep_file, load_sweep

__all__ = ["Loc", "Recipe", "RecipeError", "apply_overrides", "is_sweep_file", "load_recipe", "load_sweep",
           "recipe_from_dict"]
