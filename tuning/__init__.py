"""keras-zoo hyperparameter search: Keras Tuner over a recipe's config (see tuning/search.py)."""

from tuning.search import SearchResult, tune

__all__ = ["SearchResult", "tune"]
