"""keras-zoo models: the backbone catalog and resolver, task heads and export.

Importing it changes no setting: `zoo.runtime.configure_tensorflow_cpu()` applies keras-zoo's
TensorFlow CPU settings (the `keras-zoo` command does it itself).
"""
