"""Image classification: the recipe (recipe.py, `RECIPE`) and its image reading and decoding
(images.py).

`recipes.image_classification.RECIPE` (and any other name of recipe.py) loads recipe.py on first use, so that
`python -m recipes.image_classification` applies its process settings before TensorFlow loads (__main__.py).
"""

from recipes import attributes_of

__getattr__ = attributes_of(__name__, "recipes.image_classification.recipe")
