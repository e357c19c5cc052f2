"""Sentiment analysis (text classification): the recipe (recipe.py, `RECIPE`).

`recipes.sentiment.RECIPE` (and any other name of recipe.py) loads recipe.py on first use, so that
`python -m recipes.sentiment` applies its process settings before TensorFlow loads (__main__.py).
"""

from importlib import import_module
from importlib.util import find_spec


def __getattr__(name: str):
    if (
        find_spec(f"{__name__}.{name}") is not None
    ):  # a module of this package (`from . import tags`)
        return import_module(f"{__name__}.{name}")
    return getattr(import_module("recipes.sentiment.recipe"), name)
