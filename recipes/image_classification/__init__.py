"""Image classification: the recipe (recipe.py, `RECIPE`). Its image reading and decoding: images.py.

`recipes.image_classification.RECIPE` (and any other name of recipe.py) loads recipe.py on first use, so that
`python -m recipes.image_classification` applies its process settings before TensorFlow loads (__main__.py).
"""

from importlib import import_module


def __getattr__(name: str):
    return getattr(import_module("recipes.image_classification.recipe"), name)
