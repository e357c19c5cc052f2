"""The engine's training step is traced once per fit, not twice."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from recipes import training
from recipes.config import TrainConfig


class CountsTraces(keras.layers.Layer):
    """Python in `call` runs only while TensorFlow traces the step, so it counts the traces."""

    def __init__(self):
        super().__init__()
        self.training_traces = 0

    def call(self, x, training=False):
        self.training_traces += bool(training)
        return x


def compiled_model() -> tuple[keras.Model, CountsTraces]:
    counter = CountsTraces()
    inputs = keras.Input((4,))
    model = keras.Model(inputs, keras.layers.Dense(2)(counter(inputs)))
    model.compile(optimizer=training.make_optimizer(TrainConfig(), steps_per_epoch=4),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model, counter


@pytest.mark.parametrize("built_first, traces", [(True, 1), (False, 2)])
def test_an_optimizer_built_before_fit_saves_the_second_trace(built_first, traces):
    # (False, 2) is Keras 3.15's own behaviour without a distribution strategy: it builds the
    # optimizer inside the traced step, and TensorFlow traces a function that made variables again.
    # If that case ever traces once, Keras has fixed it and `build_optimizer` can go.
    model, counter = compiled_model()
    if built_first:
        training.build_optimizer(model)
        assert model.optimizer.built and len(model.optimizer.variables) > 2
    x, y = np.random.default_rng(0).normal(size=(16, 4)).astype("float32"), np.arange(16) % 2
    model.fit(x, y, batch_size=4, epochs=2, verbose=0)
    assert counter.training_traces == traces
