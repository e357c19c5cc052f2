"""Named-entity recognition (token classification): the recipe (recipe.py, `RECIPE`), its data
readers (data.py), tag schemes and entity metrics (tags.py), the model's token inputs and tag
decoding (token_inputs.py) and its SavedModel (export.py).

`recipes.ner.RECIPE` (and any other name of recipe.py) loads recipe.py on first use, so that
`python -m recipes.ner` applies its process settings before TensorFlow loads (__main__.py).
"""

from recipes import attributes_of

__getattr__ = attributes_of(__name__, "recipes.ner.recipe")
