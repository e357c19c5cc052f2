"""keras-zoo models: the backbone catalog and resolver, task heads and export."""

from zoo.runtime import configure_tensorflow_cpu

configure_tensorflow_cpu()  # before TensorFlow is imported (see zoo/runtime.py)
