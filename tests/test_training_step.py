"""The engine's training step: traced once per fit, not twice; its optimizer; the epoch it keeps."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from recipes.engine import training
from recipes.engine.config import TrainConfig


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
    model.compile(
        optimizer=training.make_optimizer(TrainConfig(), steps_per_epoch=4),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
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


class OneHotEmbedding(keras.layers.Layer):
    """An embedding looked up by a one-hot product: its gradient is dense, never tf.IndexedSlices."""

    def build(self, input_shape):
        self.embeddings = self.add_weight((50, 8), name="embeddings")

    def call(self, ids):
        return keras.ops.matmul(keras.ops.one_hot(ids, 50), self.embeddings)


def embedding_model(seed: int, dense_gradient: bool = False) -> keras.Model:
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((5,), dtype="int32")
    lookup = OneHotEmbedding() if dense_gradient else keras.layers.Embedding(50, 8)
    vectors = keras.layers.GlobalAveragePooling1D()(lookup(inputs))
    return keras.Model(inputs, keras.layers.Dense(3)(keras.layers.LayerNormalization()(vectors)))


def trained_weights(
    optimizer_class, x, y, dense_gradient=False, **optimizer_options
) -> list[np.ndarray]:
    model = embedding_model(seed=1, dense_gradient=dense_gradient)
    model.set_weights(embedding_model(seed=1).get_weights())  # the same start for both lookups
    schedule = training.WarmupLinearDecay(3e-2, warmup_steps=3, total_steps=40)
    optimizer = optimizer_class(learning_rate=schedule, weight_decay=0.05, **optimizer_options)
    optimizer.exclude_from_weight_decay(var_names=["bias", "gamma", "beta"])
    model.compile(
        optimizer=optimizer, loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    )
    model.fit(x, y, batch_size=8, epochs=3, shuffle=False, verbose=0)
    return model.get_weights()


def assert_same_weights(got, expected):
    start = embedding_model(seed=1).get_weights()
    for got_weight, expected_weight, start_weight in zip(got, expected, start):
        assert not np.allclose(expected_weight, start_weight)  # it trained
        np.testing.assert_allclose(got_weight, expected_weight, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "fused_options, keras_options", [({}, {}), ({"clipnorm": 1.0}, {"clipnorm": 1.0})]
)
def test_the_fused_adamw_is_keras_adamw_on_dense_gradients_and_on_dense_embedding_updates(
    fused_options, keras_options
):
    """zoo.keras_compat.FusedAdamW (TensorFlow's fused Adam kernel) trains to the weights of
    keras.optimizers.AdamW given the dense gradient (dense kernels, weight decay with exclusions, a
    learning-rate schedule, clipping), also for a word embedding whose gradient is tf.IndexedSlices
    with repeated tokens in a batch (summed per token first, as the dense gradient is)."""
    from zoo.keras_compat import FusedAdamW

    rng = np.random.default_rng(0)
    # tokens repeat within batches
    x, y = (
        rng.integers(0, 50, size=(64, 5)),
        rng.integers(0, 3, size=64),
    )
    assert_same_weights(
        trained_weights(FusedAdamW, x, y, **fused_options),
        trained_weights(keras.optimizers.AdamW, x, y, dense_gradient=True, **keras_options),
    )


def test_on_an_embedding_without_repeated_tokens_the_dense_fused_adamw_is_keras_adamw():
    # With repeated tokens Keras 3.15's AdamW differs: its element-wise ops keep the tf.IndexedSlices
    # gradient sparse, so m and v take each repeat's share separately (v gets the sum of the squares,
    # not the square of the sum). The fused update first sums the repeats, as dense AdamW (and PyTorch) do.
    from zoo.keras_compat import FusedAdamW

    rng = np.random.default_rng(0)
    x, y = np.tile(rng.permutation(50)[:40].reshape(8, 5), (3, 1)), rng.integers(0, 3, size=24)
    assert_same_weights(
        trained_weights(FusedAdamW, x, y), trained_weights(keras.optimizers.AdamW, x, y)
    )


def test_the_fused_adamw_gives_the_same_weights_with_and_without_a_distribution_strategy():
    # Under a strategy Keras's optimizer calls `update_step` per variable inside the strategy's
    # `update`; the fused kernel must then write the replica's variables as it does without one.
    import tensorflow as tf

    from zoo.keras_compat import FusedAdamW

    rng = np.random.default_rng(0)
    x, y = rng.integers(0, 50, size=(64, 5)), rng.integers(0, 3, size=64)
    without_strategy = trained_weights(FusedAdamW, x, y)
    with tf.distribute.OneDeviceStrategy("/cpu:0").scope():
        under_strategy = trained_weights(FusedAdamW, x, y)
    assert_same_weights(without_strategy, under_strategy)
    for got, expected in zip(without_strategy, under_strategy):
        np.testing.assert_array_equal(got, expected)


def test_the_engine_trains_with_the_fused_adamw_and_it_reloads_from_a_saved_model(tmp_path):
    from zoo.keras_compat import FusedAdamW

    optimizer = training.make_optimizer(TrainConfig(), steps_per_epoch=4)
    assert isinstance(optimizer, FusedAdamW)
    model = embedding_model(seed=0)
    model.compile(
        optimizer=optimizer, loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    )
    model.fit(np.zeros((8, 5), "int32"), np.zeros(8), verbose=0)
    model.save(tmp_path / "model.keras")
    reloaded = keras.saving.load_model(tmp_path / "model.keras")
    assert isinstance(reloaded.optimizer, FusedAdamW)


def test_with_speedups_off_training_gets_keras_adamw():
    """`train.speedups: false`: keras.optimizers.AdamW itself, with the same settings."""
    import keras

    from zoo import keras_compat

    off = training.make_optimizer(TrainConfig(speedups=False, clipnorm=1.0), steps_per_epoch=4)
    on = training.make_optimizer(TrainConfig(clipnorm=1.0), steps_per_epoch=4)
    assert type(off) is keras.optimizers.AdamW and type(on) is keras_compat.FusedAdamW
    assert (off.weight_decay, off.clipnorm) == (on.weight_decay, on.clipnorm) == (0.01, 1.0)


def test_the_kept_epoch_is_the_best_monitored_one_ties_going_to_the_lower_validation_loss(tmp_path):
    from recipes.engine.run_dir import RunDir
    from recipes.engine.run_metrics import final_metrics

    history = tmp_path / "history.csv"
    history.write_text("epoch,val_accuracy,val_loss\n0,0.90,0.50\n")  # an epoch before a resume
    path = tmp_path / "best.weights.h5"
    model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1, use_bias=False)])
    checkpoint = training.BestEpochCheckpoint(path, "val_accuracy", history)
    checkpoint.set_model(model)
    saved = {}
    for epoch, (accuracy, loss) in enumerate(
        [(0.9, 0.6), (0.9, 0.4), (0.9, 0.45), (0.8, 0.1), (None, 0.2)], 1
    ):
        model.set_weights([np.full((1, 1), float(epoch))])
        logs = {"val_loss": loss} | ({"val_accuracy": accuracy} if accuracy is not None else {})
        checkpoint.on_epoch_end(epoch, logs)
        if path.exists():
            saved[epoch] = path.stat().st_mtime_ns
        if accuracy is not None:
            with history.open("a") as f:
                f.write(f"{epoch},{accuracy},{loss}\n")
    model.load_weights(str(path))
    # the tie with the lower loss; not the earlier epoch 0's
    assert model.get_weights()[0].item() == 2.0
    assert sorted(saved) == [2, 3, 4, 5] and len(set(saved.values())) == 1  # written once
    (tmp_path / "run.json").write_text("{}")
    # epoch 2 of the file, 1-based
    assert final_metrics(RunDir(tmp_path), "val_accuracy")["best_epoch"] == 3.0
    assert final_metrics(RunDir(tmp_path), "val_loss")["best_epoch"] == 5.0


def test_the_schedule_warms_up_linearly_then_decays_and_without_warm_up_starts_at_its_peak():
    rates = [
        float(training.WarmupLinearDecay(1.0, warmup_steps=2, total_steps=6)(step))
        for step in range(7)
    ]
    assert rates == pytest.approx([0.0, 0.5, 1.0, 0.75, 0.5, 0.25, 0.0])
    rates = [
        float(training.WarmupLinearDecay(1.0, warmup_steps=0, total_steps=4)(step))
        for step in range(5)
    ]
    assert rates == pytest.approx([1.0, 0.75, 0.5, 0.25, 0.0])
