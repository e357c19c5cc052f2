"""Sentiment analysis (text classification): the recipe (recipe.py, `RECIPE`).

`recipes.sentiment.RECIPE` (and any other name of recipe.py) loads recipe.py on first use, so that
`python -m recipes.sentiment` applies its process settings before TensorFlow loads (__main__.py).
"""

from recipes import attributes_of

__getattr__ = attributes_of(__name__, "recipes.sentiment.recipe")
