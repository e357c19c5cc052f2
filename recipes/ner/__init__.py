"""Named-entity recognition (token classification): the recipe (recipe.py, `RECIPE`). Its data readers: data.py; tag schemes and entity metrics: tags.py; the model's
token inputs and tag decoding: token_inputs.py; its SavedModel: export.py.

`recipes.ner.RECIPE` (and any other name of recipe.py) loads recipe.py on first use, so that
`python -m recipes.ner` applies its process settings before TensorFlow loads (__main__.py).
"""

from importlib import import_module


def __getattr__(name: str):
    return getattr(import_module("recipes.ner.recipe"), name)
