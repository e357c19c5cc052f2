"""The Keras internals keras-zoo cannot avoid, in one place (tested with keras 3.15; setup.cfg pins
`keras>=3.15,<3.16` and tests/test_compat.py fails loudly when one of them moves).

`uncompiled`: `keras.models.clone_model` compiles its clone like the original; the inference copy
(zoo/heads.py) must carry no training optimizer, so the clone is made while `compiled` reads False.

`all_layers`: Keras has no public way to list nested layers (as_float32 in zoo/heads.py checks each
layer's dtype policy). Keras's TensorBoard callback counts training steps from 0 at every `fit` and keeps its profiling
window as private step numbers; `TrainingLogs` (recipes/engine/training.py) continues the count across
training phases and resumes, which needs these three attributes.

`FusedAdamW`: Keras's AdamW updates each variable with a chain of separate element-wise ops (a
fresh temporary and a pass over memory for each); TensorFlow's fused `ResourceApplyAdam` kernel does
the same arithmetic in one pass (1.27-1.33x a MiniLM-L6 training step, benchmarks/RESULTS.md, "Runs
anywhere"). It overrides `update_step`, Keras's extension point for an optimizer's arithmetic, and
reads AdamW's slot variables through the private `_momentums`, `_velocities` and
`_get_variable_index` (tests/test_training_step.py trains it beside Keras's AdamW and under a
strategy, so a change there fails a test, not a run).

`distributed_fit`: Keras 3.15's TensorFlow trainer cannot `fit` our models under
`MirroredStrategy` (boolean padding masks) nor any model under `MultiWorkerMirroredStrategy`
(keras-team/keras#20585, #20329); two of its functions are replaced while a run trains under a
strategy (recipes/engine/distribute.py), and restored after.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import keras
import tensorflow as tf
from keras.src import tree
from keras.src.backend.tensorflow import trainer

TESTED_VERSION = "3.15"
# The private attributes of keras.callbacks.TensorBoard used below (tests/test_compat.py checks them).
TENSORBOARD_ATTRIBUTES = ("_global_train_batch", "_should_trace", "_start_batch", "_stop_batch")


def tensorboard_step(callback: keras.callbacks.TensorBoard) -> int:
    """The callback's global training step (where its per-step summaries are written)."""
    return callback._global_train_batch


def continue_tensorboard_steps(
    callback: keras.callbacks.TensorBoard, first_step: int, steps: int
) -> None:
    """Make the callback count from `first_step` (the steps of earlier phases and runs), and move
    its profiling window, if any, to a few steps after the first third of this `fit`'s first epoch
    (past tracing and warm-up)."""
    callback._global_train_batch = first_step
    if callback._should_trace:
        start = max(1, min(10, steps // 3))
        callback._start_batch = first_step + start
        callback._stop_batch = first_step + min(start + 4, steps)


@contextlib.contextmanager
def uncompiled(model: keras.Model) -> Iterator[None]:
    """`model` as an uncompiled one while the block runs: `keras.models.clone_model` compiles its
    clone as the original is compiled (the training optimizer with it), and Keras 3.15 has no
    argument against that; `Trainer.compiled` is the flag it reads."""
    compiled = model.compiled
    model.compiled = False
    try:
        yield
    finally:
        model.compiled = compiled


def all_layers(model: keras.Model) -> list[keras.Layer]:
    """Every layer of `model`, nested ones included (Keras has no public recursive listing)."""
    return list(model._flatten_layers())


# ------------------------------------------------------------------------------------------- AdamW
@keras.saving.register_keras_serializable(package="keras_zoo")
class FusedAdamW(keras.optimizers.AdamW):
    """`keras.optimizers.AdamW` whose per-variable update is TensorFlow's fused Adam kernel.

    The same formula as Keras's `Adam.update_step` (m and v moved towards the gradient and its square,
    `var -= lr * sqrt(1 - beta_2^t) / (1 - beta_1^t) * m / (sqrt(v) + epsilon)`), in one pass over each
    variable instead of about ten element-wise ops; weight decay is Keras's own. A MiniLM-L6 training
    step on 2 CPU cores: 1.33x in mixed bfloat16, 1.27x in float32 (paired medians of 7 alternations,
    benchmarks/RESULTS.md, "Runs anywhere"). AMSGrad falls back to Keras's update.

    A word embedding's gradient (`tf.IndexedSlices`, one row per token of the batch) is summed per
    token first, as the dense gradient is and as PyTorch does: Keras 3.15's Adam ops would keep it
    sparse, so a token that repeats would enter m and v once per repeat (v gets the sum of the
    squares, not the square of the sum).

    >>> optimizer = FusedAdamW(learning_rate=1e-3, weight_decay=0.01)
    """

    def apply(self, grads, trainable_variables=None):
        grads = [tf.convert_to_tensor(g) if isinstance(g, tf.IndexedSlices) else g for g in grads]
        return super().apply(grads, trainable_variables)

    def update_step(self, gradient, variable, learning_rate):
        if self.amsgrad:
            return super().update_step(gradient, variable, learning_rate)
        self._fused_update(gradient, variable, self._adam_scalars(variable.dtype, learning_rate))

    def _adam_scalars(self, dtype, learning_rate) -> dict:
        step = tf.cast(self.iterations + 1, dtype)
        beta_1, beta_2 = tf.cast(self.beta_1, dtype), tf.cast(self.beta_2, dtype)
        return dict(
            beta1_power=tf.pow(beta_1, step),
            beta2_power=tf.pow(beta_2, step),
            lr=tf.cast(learning_rate, dtype),
            beta1=beta_1,
            beta2=beta_2,
            epsilon=tf.cast(self.epsilon, dtype),
        )

    def _fused_update(self, gradient, variable, scalars: dict) -> None:
        index = self._get_variable_index(variable)
        tf.raw_ops.ResourceApplyAdam(
            var=_handle(variable),
            m=_handle(self._momentums[index]),
            v=_handle(self._velocities[index]),
            grad=tf.cast(gradient, variable.dtype),
            use_locking=False,
            **scalars,
        )


def _handle(variable) -> tf.Tensor:
    """The resource handle of a Keras variable or of the tf.Variable the TF optimizer passes."""
    return (variable.value if isinstance(variable, keras.Variable) else variable).handle


# ------------------------------------------------------------------------------------ tf.distribute
@contextlib.contextmanager
def distributed_fit() -> Iterator[None]:
    """While the block runs, `Model.fit` / `evaluate` can run under `MirroredStrategy` and
    `MultiWorkerMirroredStrategy`; Keras's own functions are back when it ends, however it ends.

    Two places in keras/src/backend/tensorflow/trainer.py fail there (found with keras 3.15.1 and
    TF 2.21; tests/test_distribute.py trains every recipe both ways, and
    tests/test_compat.py fails once Keras trains such a model unpatched, so that this can go):
    - `_maybe_symbolic_build` takes a first batch of the distributed dataset and averages it over
      the replicas with `strategy.reduce("MEAN", batch)`. `MirroredStrategy` cannot add up a
      boolean padding mask ("Value for attr 'T' of bool is not in the list of allowed values ...
      {{node AddN}}"); the collective strategy cannot reduce an (x, y) structure at all ("Attempt
      to convert a value ({...: PerReplica...}) with an unsupported type"; keras-team/keras#20329,
      #20585). Taking that batch also starts an extra pass over the dataset, so a dataset that
      reshuffles each pass trains on another order than on one device. The batch only gives shapes
      and dtypes for building the metrics and optimizer: they are read from the dataset's
      `element_spec` instead, without iterating it.
    - `reduce_per_replica` reduces the scalar step logs with `strategy.reduce("MEAN", v, axis=0)`:
      "Invalid reduction dimension 0 for input with 0 dimensions". They are scalars: mean over
      replicas, as Keras does for `MirroredStrategy`.
    The epoch logs (history.csv) are unaffected, Keras computes them from the metrics' synchronised
    variables. Nested blocks patch once.
    """

    symbolic_build = trainer.TensorFlowTrainer._maybe_symbolic_build
    reduce_per_replica = trainer.reduce_per_replica
    if getattr(symbolic_build, "keras_zoo_patch", False):  # an enclosing block has patched them
        yield
        return

    def maybe_symbolic_build(self, iterator=None, data_batch=None):
        if self._distribute_strategy is None or iterator is None:
            return symbolic_build(self, iterator, data_batch)
        return symbolic_build(self, None, iterator.data_adapter.get_tf_dataset().element_spec)

    def reduce_scalars(values, strategy, reduction):
        if reduction in ("auto", "mean") and trainer._collective_all_reduce_multi_worker(strategy):
            return tree.map_structure(
                lambda v: (
                    strategy.reduce("MEAN", v, axis=None)
                    if isinstance(v, tf.distribute.DistributedValues)
                    else v
                ),
                values,
            )
        return reduce_per_replica(values, strategy, reduction)

    maybe_symbolic_build.keras_zoo_patch = True
    trainer.TensorFlowTrainer._maybe_symbolic_build = maybe_symbolic_build
    trainer.reduce_per_replica = reduce_scalars
    try:
        yield
    finally:
        trainer.TensorFlowTrainer._maybe_symbolic_build = symbolic_build
        trainer.reduce_per_replica = reduce_per_replica
