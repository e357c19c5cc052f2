"""Which recipes exist: a name and the module that holds its `RECIPE`. A new recipe is one module
(see README, "Writing a recipe") plus one line here; any other module with a `RECIPE` is found by
its import path (`keras-zoo train my_package.my_recipe`)."""

from __future__ import annotations

import importlib
from collections.abc import Callable

from zoo.errors import UserError, closest

RECIPES = {
    "sentiment": "recipes.sentiment",
    "image_classification": "recipes.image_classification",
    "ner": "recipes.ner",
}
# How a recipe's reports print (its `Recipe.format_report`), as "module:function", where it is not
# the classifiers' default: `keras-zoo show` prints reports without loading a recipe and TensorFlow.
REPORT_FORMATS = {"ner": "recipes.ner.tags:format_entity_report"}
DEFAULT_REPORT_FORMAT = "recipes.common.metrics:format_report"


def report_format(name: str) -> Callable[[dict], str] | None:
    """A registered recipe's report formatter, without importing the recipe (None: not registered)."""
    if name not in RECIPES:
        return None
    module, _, function = REPORT_FORMATS.get(name, DEFAULT_REPORT_FORMAT).partition(":")
    return getattr(importlib.import_module(module), function)


def load_recipe(name: str):
    """The `Recipe` of a registered recipe by name, or of your own module by its import path."""
    from recipes.engine.contract import Recipe  # keeps `keras-zoo --help` free of heavy imports

    if name in RECIPES:
        module = importlib.import_module(RECIPES[name])
    elif "." in name:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as e:
            raise UserError(f"recipe module '{name}' not found ({e})") from None
    else:
        raise UserError(
            f"unknown recipe '{name}'{closest(name, RECIPES)}; recipes: {', '.join(RECIPES)}"
        )
    recipe = getattr(module, "RECIPE", None)
    if not isinstance(recipe, Recipe):
        raise UserError(
            f"{module.__name__}: has no RECIPE (an instance of recipes.engine.contract.Recipe)"
        )
    return recipe
