"""keras-zoo hyperparameter search: Keras Tuner over a recipe's config (see tuning/search.py)."""

import zoo  # noqa: F401  (first: its TensorFlow CPU settings precede TensorFlow, zoo/runtime.py)
from tuning.common import SearchResult
from tuning.search import tune

__all__ = ["SearchResult", "tune"]
