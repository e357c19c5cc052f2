"""The engine's training step: traced once per fit, not twice; its optimizer; the epoch it keeps."""

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


def trained_weights(optimizer_class, x, y, dense_gradient=False, **optimizer_options) -> list[np.ndarray]:
    model = embedding_model(seed=1, dense_gradient=dense_gradient)
    model.set_weights(embedding_model(seed=1).get_weights())  # the same start for both lookups
    schedule = training.WarmupLinearDecay(3e-2, warmup_steps=3, total_steps=40)
    optimizer = optimizer_class(learning_rate=schedule, weight_decay=0.05, **optimizer_options)
    optimizer.exclude_from_weight_decay(var_names=["bias", "gamma", "beta"])
    model.compile(optimizer=optimizer, loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, y, batch_size=8, epochs=3, shuffle=False, verbose=0)
    return model.get_weights()


def assert_same_weights(got, expected):
    start = embedding_model(seed=1).get_weights()
    for got_weight, expected_weight, start_weight in zip(got, expected, start):
        assert not np.allclose(expected_weight, start_weight)  # it trained
        np.testing.assert_allclose(got_weight, expected_weight, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("fused_options, keras_options", [({"lazy_embedding_updates": False}, {}),
                                                           ({"clipnorm": 1.0}, {"clipnorm": 1.0})])
def test_the_fused_adamw_is_keras_adamw_on_dense_gradients_and_on_dense_embedding_updates(fused_options, keras_options):
    """zoo.keras_compat.FusedAdamW (TensorFlow's fused Adam kernel) trains to the weights of
    keras.optimizers.AdamW given the dense gradient (dense kernels, weight decay with exclusions, a
    learning-rate schedule, clipping), also for a word embedding whose gradient is tf.IndexedSlices
    with repeated tokens in a batch, when its updates are not lazy (off, or with clipping)."""
    from zoo.keras_compat import FusedAdamW

    rng = np.random.default_rng(0)
    x, y = rng.integers(0, 50, size=(64, 5)), rng.integers(0, 3, size=64)  # tokens repeat within batches
    assert_same_weights(trained_weights(FusedAdamW, x, y, **fused_options),
                        trained_weights(keras.optimizers.AdamW, x, y, dense_gradient=True, **keras_options))


def test_on_an_embedding_without_repeated_tokens_the_dense_fused_adamw_is_keras_adamw():
    # With repeated tokens Keras 3.15's AdamW differs: its element-wise ops keep the tf.IndexedSlices
    # gradient sparse, so m and v take each repeat's share separately (v gets the sum of the squares,
    # not the square of the sum). The fused update first sums the repeats, as dense AdamW (and PyTorch) do.
    from zoo.keras_compat import FusedAdamW

    rng = np.random.default_rng(0)
    x, y = np.tile(rng.permutation(50)[:40].reshape(8, 5), (3, 1)), rng.integers(0, 3, size=24)
    assert_same_weights(trained_weights(FusedAdamW, x, y, lazy_embedding_updates=False),
                        trained_weights(keras.optimizers.AdamW, x, y))


def lazy_adamw_reference(start, steps, lr, wd, beta_1=0.9, beta_2=0.999, epsilon=1e-7):
    """LazyAdam with decoupled weight decay, written out in NumPy: only the rows of each step's ids
    move (their gradients summed), with Keras's AdamW formula in float32 as TensorFlow computes it."""
    lr, wd, beta_1, beta_2, epsilon = (np.float32(x) for x in (lr, wd, beta_1, beta_2, epsilon))
    var, m, v = start.copy(), np.zeros_like(start), np.zeros_like(start)
    for t, (ids, values) in enumerate(steps, start=1):
        rows = np.unique(ids)
        g = np.zeros_like(start)
        np.add.at(g, ids, values)
        g = g[rows]
        m[rows] += (g - m[rows]) * (1 - beta_1)
        v[rows] += (g**2 - v[rows]) * (1 - beta_2)
        var[rows] -= var[rows] * wd * lr
        alpha = lr * np.sqrt(1 - beta_2 ** np.float32(t)) / (1 - beta_1 ** np.float32(t))
        var[rows] -= m[rows] * alpha / (np.sqrt(v[rows]) + epsilon)
    return var, m, v


@pytest.mark.parametrize("strategy", [False, True])
def test_lazy_embedding_updates_move_only_the_rows_of_the_batch_tokens(strategy):
    """Three steps of sparse gradients with repeated ids: the rows that appeared follow a NumPy
    LazyAdam (repeats summed, weight decay on those rows only), rows never looked up keep their
    weights and zero moments; the same with and without a distribution strategy."""
    import contextlib

    import tensorflow as tf

    from zoo.keras_compat import FusedAdamW

    rng = np.random.default_rng(3)
    start = rng.normal(size=(12, 4)).astype("float32")
    steps = [(np.array([1, 3, 1, 7]), rng.normal(size=(4, 4)).astype("float32")),
             (np.array([3, 5]), rng.normal(size=(2, 4)).astype("float32")),
             (np.array([5, 5, 5, 1]), rng.normal(size=(4, 4)).astype("float32"))]
    scope = tf.distribute.OneDeviceStrategy("/cpu:0").scope() if strategy else contextlib.nullcontext()
    with scope:
        embeddings = keras.Variable(start, name="embeddings")
        optimizer = FusedAdamW(learning_rate=0.05, weight_decay=0.1)
        optimizer.build([embeddings])
        apply = tf.function(lambda ids, values: optimizer.apply(
            [tf.IndexedSlices(values, ids, tf.constant(start.shape, tf.int64))], [embeddings]))
        for ids, values in steps:
            if strategy:
                tf.distribute.get_strategy().run(apply, args=(ids, values))
            else:
                apply(ids, values)
    expected, m, v = lazy_adamw_reference(start, steps, lr=0.05, wd=0.1)
    np.testing.assert_allclose(embeddings.numpy(), expected, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(optimizer._momentums[0].numpy(), m, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(optimizer._velocities[0].numpy(), v, rtol=1e-6, atol=1e-7)
    untouched = [0, 2, 4, 6, 8, 9, 10, 11]
    np.testing.assert_array_equal(embeddings.numpy()[untouched], start[untouched])
    assert not np.allclose(embeddings.numpy()[[1, 3, 5, 7]], start[[1, 3, 5, 7]])
    # Row 7 appeared only in step 1: dense AdamW would have kept moving it on its momentum.
    one_step, _, _ = lazy_adamw_reference(start, steps[:1], lr=0.05, wd=0.1)
    np.testing.assert_allclose(embeddings.numpy()[7], one_step[7], rtol=1e-6)


def test_the_fused_adamw_gives_the_same_weights_with_and_without_a_distribution_strategy(monkeypatch):
    # With no strategy FusedAdamW computes the learning rate and Adam's step scalars once per step and
    # skips tf.distribute's per-variable `update` (2 s less tracing for MiniLM); under a strategy it
    # keeps Keras's per-variable path for the Adam step (and its own weight decay, through the
    # strategy's `update`). The two must agree bit for bit.
    import tensorflow as tf

    from zoo.keras_compat import FusedAdamW

    keras_paths = []
    for name in ("_apply_weight_decay", "_backend_update_step"):
        keras_method = getattr(keras.optimizers.AdamW, name)
        monkeypatch.setattr(keras.optimizers.AdamW, name, lambda self, *args, _m=keras_method, _n=name:
                            keras_paths.append(_n) or _m(self, *args))
    rng = np.random.default_rng(0)
    x, y = rng.integers(0, 50, size=(64, 5)), rng.integers(0, 3, size=64)
    without_strategy = trained_weights(FusedAdamW, x, y)
    assert keras_paths == []
    with tf.distribute.OneDeviceStrategy("/cpu:0").scope():
        under_strategy = trained_weights(FusedAdamW, x, y)
    assert set(keras_paths) == {"_backend_update_step"}
    assert_same_weights(without_strategy, under_strategy)
    for got, expected in zip(without_strategy, under_strategy):
        np.testing.assert_array_equal(got, expected)


def test_the_engine_trains_with_the_fused_adamw_and_it_reloads_from_a_saved_model(tmp_path):
    from zoo.keras_compat import FusedAdamW

    optimizer = training.make_optimizer(TrainConfig(), steps_per_epoch=4)
    assert isinstance(optimizer, FusedAdamW)
    model = embedding_model(seed=0)
    model.compile(optimizer=optimizer, loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(np.zeros((8, 5), "int32"), np.zeros(8), verbose=0)
    model.save(tmp_path / "model.keras")
    reloaded = keras.saving.load_model(tmp_path / "model.keras")
    assert isinstance(reloaded.optimizer, FusedAdamW)


def test_with_speedups_off_training_gets_keras_adamw_and_plain_layer_norms(tiny_bert):
    """`train.speedups: false`: keras.optimizers.AdamW itself (same settings), and backbones whose
    layer norms run Keras's own `call`."""
    import keras

    from zoo import keras_compat
    from zoo.backbones import load_backbone

    off = training.make_optimizer(TrainConfig(speedups=False, clipnorm=1.0), steps_per_epoch=4)
    on = training.make_optimizer(TrainConfig(clipnorm=1.0), steps_per_epoch=4)
    assert type(off) is keras.optimizers.AdamW and type(on) is keras_compat.FusedAdamW
    assert (off.weight_decay, off.clipnorm) == (on.weight_decay, on.clipnorm) == (0.01, 1.0)

    def rewritten(backbone) -> int:
        return sum("call" in vars(layer) for layer in keras_compat.all_layers(backbone)
                   if isinstance(layer, keras.layers.LayerNormalization))

    assert rewritten(load_backbone(str(tiny_bert), speedups=False)[0]) == 0
    assert rewritten(load_backbone(str(tiny_bert))[0]) == 5  # embeddings' + 2 per layer of the 2-layer BERT


def test_the_kept_epoch_is_the_best_monitored_one_ties_going_to_the_lower_validation_loss(tmp_path):
    from recipes.run_dir import RunDir
    from recipes.run_metrics import final_metrics

    history = tmp_path / "history.csv"
    history.write_text("epoch,val_accuracy,val_loss\n0,0.90,0.50\n")  # an epoch before a resume
    path = tmp_path / "best.weights.h5"
    model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1, use_bias=False)])
    checkpoint = training.BestEpochCheckpoint(path, "val_accuracy", history)
    checkpoint.set_model(model)
    saved = {}
    for epoch, (accuracy, loss) in enumerate([(0.9, 0.6), (0.9, 0.4), (0.9, 0.45), (0.8, 0.1), (None, 0.2)], 1):
        model.set_weights([np.full((1, 1), float(epoch))])
        logs = {"val_loss": loss} | ({"val_accuracy": accuracy} if accuracy is not None else {})
        checkpoint.on_epoch_end(epoch, logs)
        if path.exists():
            saved[epoch] = path.stat().st_mtime_ns
        if accuracy is not None:
            with history.open("a") as f:
                f.write(f"{epoch},{accuracy},{loss}\n")
    model.load_weights(str(path))
    assert model.get_weights()[0].item() == 2.0  # the tie with the lower loss; not the earlier epoch 0's
    assert sorted(saved) == [2, 3, 4, 5] and len(set(saved.values())) == 1  # written once
    (tmp_path / "run.json").write_text("{}")
    assert final_metrics(RunDir(tmp_path), "val_accuracy")["best_epoch"] == 3.0  # epoch 2 of the file, 1-based
    assert final_metrics(RunDir(tmp_path), "val_loss")["best_epoch"] == 5.0
