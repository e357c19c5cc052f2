"""Export trained models as SavedModels with preprocessing inside, loadable with TensorFlow alone
(plus tensorflow-text for the tokenizer ops): no keras-zoo, keras or keras-hub at serving time."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import tensorflow as tf

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
        return {"label": tf.gather(self.labels, tf.argmax(probabilities, axis=-1)),
                "probabilities": probabilities,
                "label_names": tf.broadcast_to(self.labels, tf.shape(probabilities))}


def export_text_classifier(model, encoder: TextEncoder, labels: Sequence[str], directory: Path) -> Path:
    """Write `directory/saved_model` (serving_default: `text` -> `label`, `probabilities`, `label_names`)."""
    module = TextClassifierServing(model, encoder, labels)
    path = Path(directory) / "saved_model"
    tf.saved_model.save(module, str(path), signatures={"serving_default": module.serve})
    return path
