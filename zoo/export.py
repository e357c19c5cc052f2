"""Export trained models as SavedModels with preprocessing inside, loadable with TensorFlow alone
(plus tensorflow-text for the tokenizer ops): no keras-zoo, keras or keras-hub at serving time;
and image classifiers as TFLite models."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from zoo.image_inputs import center_crop, decode_rgb, square_resize
from zoo.text_inputs import TextEncoder


class TextClassifierServing(tf.Module):
    """Serving signature: raw strings in, label names and class probabilities out."""

    def __init__(self, model, encoder: TextEncoder, labels: Sequence[str]):
        super().__init__()
        self.model = model
        self.encoder = encoder
        self.labels = tf.constant([str(label) for label in labels])

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="text")])
    def serve(self, text):
        logits = self.model(self.encoder.encode(text), training=False)
        probabilities = tf.nn.softmax(tf.cast(logits, tf.float32), axis=-1)
        return {
            "label": tf.gather(self.labels, tf.argmax(probabilities, axis=-1)),
            "probabilities": probabilities,
            "label_names": tf.broadcast_to(self.labels, tf.shape(probabilities)),
        }


def export_text_classifier(
    model, encoder: TextEncoder, labels: Sequence[str], directory: Path
) -> Path:
    """Write `directory/saved_model` (serving_default: `text` -> `label`, `probabilities`, `label_names`)."""
    module = TextClassifierServing(model, encoder, labels)
    path = Path(directory) / "saved_model"
    tf.saved_model.save(module, str(path), signatures={"serving_default": module.serve})
    return path


class ImageClassifierServing(tf.Module):
    """Serving signature: encoded image bytes (JPEG, PNG, GIF, BMP, WebP) in, label names and class
    probabilities out; decoding, the centre square, resizing and cropping happen inside."""

    def __init__(self, model, labels: Sequence[str], side: int, interpolation: str):
        super().__init__()
        self.model = model
        self.labels = tf.constant([str(label) for label in labels])
        self.side, self.interpolation = int(side), interpolation
        self.image_size = int(model.input.shape[1])

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="image_bytes")])
    def serve(self, image_bytes):
        pixels = tf.map_fn(
            lambda b: square_resize(decode_rgb(b, self.side), self.side, self.interpolation),
            image_bytes,
            fn_output_signature=tf.TensorSpec([self.side, self.side, 3], tf.uint8),
        )
        logits = self.model(center_crop(pixels, self.image_size), training=False)
        probabilities = tf.nn.softmax(tf.cast(logits, tf.float32), axis=-1)
        return {
            "label": tf.gather(self.labels, tf.argmax(probabilities, axis=-1)),
            "probabilities": probabilities,
            "label_names": tf.broadcast_to(self.labels, tf.shape(probabilities)),
        }


def export_image_classifier(
    model, labels: Sequence[str], side: int, interpolation: str, directory: Path
) -> Path:
    """Write `directory/saved_model` (serving_default: `image_bytes` -> `label`, `probabilities`, `label_names`)."""
    module = ImageClassifierServing(model, labels, side, interpolation)
    path = Path(directory) / "saved_model"
    tf.saved_model.save(module, str(path), signatures={"serving_default": module.serve})
    return path


TFLITE_VARIANTS = {"float": "model_float.tflite", "dynamic_range": "model_dynamic_range.tflite"}


def export_tflite(model, directory: Path) -> dict[str, Path]:
    """Write float and dynamic-range-quantised TFLite models with Keras's LiteRT exporter: one image
    of pixels (0..255, float32, `[1, size, size, 3]`, already cropped as in evaluation) in, class
    probabilities out."""

    size = int(model.input.shape[1])
    probabilities = keras.Model(model.input, keras.layers.Softmax(dtype="float32")(model.output))
    signature = [tf.TensorSpec([1, size, size, 3], tf.float32, name="pixels")]
    paths = {}
    for variant, name in TFLITE_VARIANTS.items():
        paths[variant] = Path(directory) / name
        options = (
            {"optimizations": [tf.lite.Optimize.DEFAULT]} if variant == "dynamic_range" else {}
        )
        # dynamic range: int8 weights, float activations
        probabilities.export(
            str(paths[variant]),
            format="litert",
            input_signature=signature,
            verbose=False,
            **options,
        )
    return paths


def tflite_probabilities(path: Path, pixels) -> np.ndarray:
    """Run a TFLite model from `export_tflite` over float pixels `[N, size, size, 3]`, one at a time."""
    try:  # LiteRT's interpreter where installed; TensorFlow's (deprecated, same runtime) otherwise
        from ai_edge_litert.interpreter import Interpreter  # noqa: PLC0415  (an optional package)
    except ImportError:
        Interpreter = tf.lite.Interpreter  # noqa: N806  (the class, named as the import above names it)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*tf.lite.Interpreter is deprecated")
        interpreter = Interpreter(model_path=str(path))
    interpreter.allocate_tensors()
    (inp,), (out,) = interpreter.get_input_details(), interpreter.get_output_details()
    rows = []
    for image in np.asarray(pixels, np.float32):
        interpreter.set_tensor(inp["index"], image[None])
        interpreter.invoke()
        rows.append(interpreter.get_tensor(out["index"])[0])
    return np.stack(rows)
