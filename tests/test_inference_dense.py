"""zoo.keras_compat.use_inference_dense: Dense layers of models that only run forward, on a 2-D view
with the tanh GELU in its sigmoid form; the same outputs as Keras's, configs and saved files unchanged."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from zoo.keras_compat import all_layers, gelu_tanh_as_sigmoid, use_inference_dense


def test_the_sigmoid_form_is_kerashubs_tanh_gelu():
    from keras_hub.src.utils.keras_utils import gelu_approximate

    x = tf.constant(np.linspace(-12, 12, 20001, dtype="float32"))
    np.testing.assert_allclose(gelu_tanh_as_sigmoid(x).numpy(), gelu_approximate(x).numpy(), rtol=1e-5, atol=1e-6)
    assert abs(float(gelu_tanh_as_sigmoid(tf.constant(1.0))) - 0.8411920) < 1e-6  # 0.5 (1 + tanh(0.7978846 * 1.044715))


def tiny_bert_classifier() -> keras.Model:
    from keras_hub.models import BertBackbone

    keras.utils.set_random_seed(3)
    backbone = BertBackbone(vocabulary_size=50, num_layers=2, num_heads=2, hidden_dim=16, intermediate_dim=32,
                            max_sequence_length=16)
    inputs = {name: keras.Input((None,), dtype="int32", name=name) for name in ("token_ids", "segment_ids", "padding_mask")}
    features = backbone(inputs)["sequence_output"]
    logits = keras.layers.Dense(3, name="logits")(keras.layers.GlobalAveragePooling1D()(features))
    model = keras.Model(inputs, logits)
    for weight in model.weights:  # biases and norms away from their initial zeros and ones
        weight.assign(weight + tf.random.stateless_normal(weight.shape, [1, len(weight.path)]) * 0.3)
    return model


def test_a_bert_model_gives_the_same_outputs_and_saves_as_before(tmp_path):
    model = tiny_bert_classifier()
    rng = np.random.default_rng(0)
    lengths = np.array([9, 4, 1, 7])
    batch = {"token_ids": rng.integers(1, 50, (4, 9)).astype("int32"), "segment_ids": np.zeros((4, 9), "int32"),
             "padding_mask": (np.arange(9)[None] < lengths[:, None])}
    expected = model(batch, training=False).numpy()
    configs = {layer.path: layer.get_config() for layer in all_layers(model)}

    changed = use_inference_dense(model)

    dense = [layer for layer in all_layers(model) if type(layer) is keras.layers.Dense]
    patched = [layer.name for layer in dense if "call" in vars(layer)]
    # each layer's feed-forward pair (GELU, then none) and the linear head; the pooler's tanh Dense stays Keras's
    assert changed == len(patched) == 2 * 2 + 1
    assert sorted(patched) == ["feedforward_intermediate_dense"] * 2 + ["feedforward_output_dense"] * 2 + ["logits"]
    got = model(batch, training=False).numpy()
    assert np.abs(expected).max() > 0.1
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
    traced = tf.function(lambda b: model(b, training=False))
    np.testing.assert_allclose(traced(batch).numpy(), expected, rtol=1e-5, atol=1e-5)
    assert {layer.path: layer.get_config() for layer in all_layers(model)} == configs
    assert use_inference_dense(model) == 0  # once only

    model.save(tmp_path / "model.keras")
    reloaded = keras.saving.load_model(tmp_path / "model.keras", compile=False)
    assert not any("call" in vars(layer) for layer in all_layers(reloaded))  # a plain model again
    np.testing.assert_allclose(reloaded(batch, training=False).numpy(), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("rank", [2, 3, 4])
@pytest.mark.parametrize("use_bias", [True, False])
def test_plain_dense_layers_of_any_rank_agree(rank, use_bias):
    rng = np.random.default_rng(rank)
    x = rng.normal(size=(3, 5, 2, 6)[:rank - 1] + (6,)).astype("float32")
    keras_dense, fast_dense = keras.layers.Dense(4, use_bias=use_bias), keras.layers.Dense(4, use_bias=use_bias)
    keras_dense.build(x.shape), fast_dense.build(x.shape)
    keras_dense.set_weights([rng.normal(size=w.shape).astype("float32") for w in keras_dense.get_weights()])
    fast_dense.set_weights(keras_dense.get_weights())
    assert use_inference_dense(fast_dense) == 1
    got = fast_dense(x)
    assert got.shape == (*x.shape[:-1], 4)
    np.testing.assert_allclose(got.numpy(), keras_dense(x).numpy(), rtol=1e-5, atol=1e-5)


def test_other_activations_and_dtypes_keep_kerass_code():
    layers = [keras.layers.Dense(4, activation="relu"), keras.layers.Dense(4, activation="tanh"),
              keras.layers.Dense(4, dtype="mixed_bfloat16"), keras.layers.Dense(4, activation="gelu")]
    for layer in layers:
        layer.build((None, 6))
    assert [use_inference_dense(layer) for layer in layers] == [0, 0, 0, 0]
    lora = keras.layers.Dense(4)
    lora.build((None, 6))
    lora.enable_lora(2)
    assert use_inference_dense(lora) == 0
