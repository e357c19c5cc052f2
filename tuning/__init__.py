"""keras-zoo hyperparameter search: Keras Tuner over a recipe's config (see tuning/search.py)."""

from tuning.common import SearchResult
from tuning.search import tune

__all__ = ["SearchResult", "tune"]
