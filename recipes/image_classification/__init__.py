"""Image classification: the recipe (recipe.py, `RECIPE`) and its image reading and decoding
(images.py).

`recipes.image_classification.RECIPE` (and any other name of recipe.py) loads recipe.py on first use, so that
`python -m recipes.image_classification` applies its process settings before TensorFlow loads (__main__.py).
"""

from importlib import import_module
from importlib.util import find_spec


def __getattr__(name: str):
    if (
        find_spec(f"{__name__}.{name}") is not None
    ):  # a module of this package (`from . import tags`)
        return import_module(f"{__name__}.{name}")
    return getattr(import_module("recipes.image_classification.recipe"), name)
