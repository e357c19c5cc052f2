"""Named-entity recognition (token classification): the recipe (recipe.py, `RECIPE`), its data
readers (data.py), tag schemes and entity metrics (tags.py), the model's token inputs and tag
decoding (token_inputs.py) and its SavedModel (export.py).

`recipes.ner.RECIPE` (and any other name of recipe.py) loads recipe.py on first use, so that
`python -m recipes.ner` applies its process settings before TensorFlow loads (__main__.py).
"""

from importlib import import_module
from importlib.util import find_spec


def __getattr__(name: str):
    if (
        find_spec(f"{__name__}.{name}") is not None
    ):  # a module of this package (`from . import tags`)
        return import_module(f"{__name__}.{name}")
    return getattr(import_module("recipes.ner.recipe"), name)
