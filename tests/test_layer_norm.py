"""zoo.keras_compat.use_fast_layer_norms: Keras's layer norm with a hand-written gradient."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from zoo.keras_compat import use_fast_layer_norms


def outputs_and_gradients(layer: keras.layers.Layer, x: np.ndarray, upstream: np.ndarray) -> list[np.ndarray]:
    x = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = layer(x)
        loss = tf.reduce_sum(tf.cast(y, tf.float32) * upstream)  # a gradient that is not all ones
    return [y.numpy().astype("float32"), *(g.numpy() for g in tape.gradient(loss, [x, *layer.trainable_variables]))]


def twin_layers(**options) -> tuple[keras.layers.Layer, keras.layers.Layer]:
    rng = np.random.default_rng(0)
    keras_layer, fast_layer = keras.layers.LayerNormalization(**options), keras.layers.LayerNormalization(**options)
    for layer in (keras_layer, fast_layer):
        layer.build((None, None, 16))
    assert use_fast_layer_norms(fast_layer) == 1
    keras_layer.set_weights([rng.uniform(0.5, 1.5, w.shape).astype("float32") for w in keras_layer.get_weights()])
    fast_layer.set_weights(keras_layer.get_weights())
    return keras_layer, fast_layer


@pytest.mark.parametrize("options", [{"epsilon": 1e-12}, {"epsilon": 1e-3}, {"center": False}, {"rms_scaling": True}])
def test_it_gives_keras_outputs_and_gradients(options):
    """The values Keras's LayerNormalization gives, forward and for the gradients of the input, gamma
    and beta, on activations far from normalised; the options it does not handle itself (no beta,
    RMS scaling) go to Keras's own code and agree too."""
    rng = np.random.default_rng(1)
    x = (rng.normal(size=(3, 7, 16)) * 4 + 2).astype("float32")
    upstream = rng.normal(size=(3, 7, 16)).astype("float32")
    keras_layer, fast_layer = twin_layers(**options)
    expected = outputs_and_gradients(keras_layer, x, upstream)
    got = outputs_and_gradients(fast_layer, x, upstream)
    assert len(got) == len(expected) == 2 + len(keras_layer.trainable_variables)
    for got_value, expected_value in zip(got, expected):
        np.testing.assert_allclose(got_value, expected_value, rtol=1e-5, atol=2e-5)
    assert np.abs(got[1]).max() > 1e-2  # the input's gradient is not trivially zero


def test_under_bfloat16_it_computes_in_float32_and_returns_the_compute_dtype():
    rng = np.random.default_rng(2)
    x = (rng.normal(size=(2, 5, 16)) * 3).astype("float32")
    upstream = rng.normal(size=(2, 5, 16)).astype("float32")
    keras_layer, fast_layer = twin_layers(epsilon=1e-12)
    for layer in (keras_layer, fast_layer):
        layer.dtype_policy = keras.DTypePolicy("mixed_bfloat16")
    expected = outputs_and_gradients(keras_layer, x.astype("bfloat16"), upstream)
    got = outputs_and_gradients(fast_layer, x.astype("bfloat16"), upstream)
    assert fast_layer(tf.constant(x, tf.bfloat16)).dtype == tf.bfloat16
    for got_value, expected_value in zip(got, expected):
        np.testing.assert_allclose(got_value.astype("float32"), expected_value.astype("float32"), rtol=2e-2, atol=2e-2)


def test_a_backbone_given_it_keeps_its_outputs_and_saves_as_a_plain_model(tmp_path, tiny_bert):
    """Every layer norm of a KerasHub BERT (embeddings and two per transformer layer) gets the fast
    gradient and gives the same outputs; the model saves and loads as one with plain layer norms,
    and a plain model's weights load into it (Keras names weights by class, so a subclass would not)."""
    import keras_hub

    backbone = keras_hub.models.Backbone.from_preset(str(tiny_bert))
    inputs = {"token_ids": np.array([[2, 5, 6, 3, 0]]), "segment_ids": np.zeros((1, 5), "int32"),
              "padding_mask": np.array([[1, 1, 1, 1, 0]], bool)}
    before = backbone(inputs)["sequence_output"].numpy()
    assert use_fast_layer_norms(backbone) == 1 + 2 * 2
    assert use_fast_layer_norms(backbone) == 0  # already done
    after = backbone(inputs)["sequence_output"].numpy()
    np.testing.assert_allclose(after, before, rtol=1e-5, atol=1e-5)

    backbone.save(tmp_path / "backbone.keras")
    reloaded = keras.saving.load_model(tmp_path / "backbone.keras")
    np.testing.assert_allclose(reloaded(inputs)["sequence_output"].numpy(), after, rtol=1e-6, atol=1e-6)
    assert use_fast_layer_norms(reloaded) == 5  # plain again
    plain = keras_hub.models.Backbone.from_preset(str(tiny_bert))
    plain.save_weights(tmp_path / "plain.weights.h5")
    reloaded.load_weights(tmp_path / "plain.weights.h5")
    np.testing.assert_allclose(reloaded(inputs)["sequence_output"].numpy(), before, rtol=1e-5, atol=1e-5)
