"""The NER model as a SavedModel with its preprocessing and tag decoding inside, loadable with
TensorFlow alone (plus tensorflow-text for the tokenizer ops)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import tensorflow as tf

from recipes.ner.token_inputs import TokenEncoder, allowed_transitions, decode_tags, pretokenize


class TokenClassifierServing(tf.Module):
    """Serving signatures of a token classifier (named-entity tagger):

    - `serving_default`: `text` (raw strings) -> `words`, `tags`, `scores`, `starts`, `ends` (character
      offsets into the text, so `text[start:end]` is the word), `num_words`; words are split on
      whitespace and punctuation inside the graph, as `predict` splits them.
    - `tag_tokens`: `tokens` (pre-tokenised, `[batch, max_words]`, padded with "") -> `tags`, `scores`.

    Outputs are padded to the longest sentence of the batch ("" tags, -1 offsets past `num_words`).
    """

    def __init__(self, model, encoder: TokenEncoder, tags: Sequence[str], constrained: bool = True):
        super().__init__()
        self.model = model
        self.encoder = encoder
        self.tags = tf.constant([str(tag) for tag in tags])
        self.allowed = allowed_transitions(tags) if constrained else None

    def _tag(self, words: tf.RaggedTensor) -> dict[str, tf.Tensor]:
        ids, scores = decode_tags(self.encoder.word_logits(self.model, words), self.allowed)
        return {
            "tags": ids.with_flat_values(tf.gather(self.tags, ids.flat_values)).to_tensor(""),
            "scores": scores.to_tensor(0.0),
            "num_words": words.row_lengths(),
        }

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="text")])
    def serve(self, text):
        words, starts, ends = pretokenize(text)
        return {
            **self._tag(words),
            "words": words.to_tensor(""),
            "starts": starts.to_tensor(-1),
            "ends": ends.to_tensor(-1),
        }

    @tf.function(input_signature=[tf.TensorSpec([None, None], tf.string, name="tokens")])
    def serve_tokens(self, tokens):
        return self._tag(tf.RaggedTensor.from_tensor(tokens, padding=""))


def export_token_classifier(
    model, encoder: TokenEncoder, tags: Sequence[str], directory: Path, constrained: bool = True
) -> Path:
    """Write `directory/saved_model` with the `serving_default` (raw text) and `tag_tokens` signatures."""
    module = TokenClassifierServing(model, encoder, tags, constrained)
    path = Path(directory) / "saved_model"
    tf.saved_model.save(
        module,
        str(path),
        signatures={"serving_default": module.serve, "tag_tokens": module.serve_tokens},
    )
    return path
