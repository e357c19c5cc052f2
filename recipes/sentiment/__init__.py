"""Sentiment analysis (text classification): the recipe (recipe.py, `RECIPE`).

`recipes.sentiment.RECIPE` (and any other name of recipe.py) loads recipe.py on first use, so that
`python -m recipes.sentiment` applies its process settings before TensorFlow loads (__main__.py).
"""

from importlib import import_module


def __getattr__(name: str):
    return getattr(import_module("recipes.sentiment.recipe"), name)
