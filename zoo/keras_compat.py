"""The Keras internals keras-zoo cannot avoid, in one place (tested with keras 3.15; setup.cfg pins
`keras>=3.15,<3.16` and tests/test_compat.py fails loudly when one of them moves).

`all_layers`: Keras has no public way to list nested layers (as_float32 in zoo/heads.py checks each
layer's dtype policy). Keras's TensorBoard callback counts training steps from 0 at every `fit` and keeps its profiling
window as private step numbers; `TrainingLogs` (recipes/training.py) continues the count across
training phases and resumes, which needs these three attributes.
"""

from __future__ import annotations

import keras

TESTED_VERSION = "3.15"
# The private attributes of keras.callbacks.TensorBoard used below (tests/test_compat.py checks them).
TENSORBOARD_ATTRIBUTES = ("_global_train_batch", "_should_trace", "_start_batch", "_stop_batch")


def tensorboard_step(callback: keras.callbacks.TensorBoard) -> int:
    """The callback's global training step (where its per-step summaries are written)."""
    return callback._global_train_batch


def continue_tensorboard_steps(callback: keras.callbacks.TensorBoard, first_step: int, steps: int) -> None:
    """Make the callback count from `first_step` (the steps of earlier phases and runs), and move
    its profiling window, if any, to a few steps after the first third of this `fit`'s first epoch
    (past tracing and warm-up)."""
    callback._global_train_batch = first_step
    if callback._should_trace:
        start = max(1, min(10, steps // 3))
        callback._start_batch = first_step + start
        callback._stop_batch = first_step + min(start + 4, steps)


def all_layers(model: keras.Model) -> list[keras.Layer]:
    """Every layer of `model`, nested ones included (Keras has no public recursive listing)."""
    return list(model._flatten_layers())
