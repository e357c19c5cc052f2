"""Turn raw strings into a text backbone's inputs, inside the TensorFlow graph.

KerasHub's preprocessors pack every batch to one fixed `sequence_length`. Fine-tuning is much
faster when a batch is only as long as its longest text, so `TextEncoder` uses the preset's
tokenizer and adds the start/end tokens itself, then pads each batch only to its longest text
(`pad_to_buckets=False`: training without XLA, where any length costs nothing extra) or up to the
next of a few bucket lengths (XLA compiles one program per bucket, not per batch; prediction and
export). The same graph code runs in tf.data, in `predict` and in the exported SavedModel.

Example:
    >>> encoder = TextEncoder(preprocessor.tokenizer, backbone_inputs=["token_ids", "padding_mask"],
    ...                       max_length=64)  # doctest: +SKIP
    >>> encoder.encode(tf.constant(["a fine film", "dull"]))["token_ids"].shape  # doctest: +SKIP
    TensorShape([2, 16])
"""

from __future__ import annotations

import itertools
import json
import math
import weakref
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import keras
import numpy as np
import tensorflow as tf

from zoo.heads import head_features
from zoo.progress import progress

if TYPE_CHECKING:  # only for an annotation: KerasHub loads where a backbone does
    import keras_hub

# Fine steps at short lengths, where most sentences are (SST-2's median is about 10 tokens).
BUCKET_LENGTHS = (8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512)


def bucket_lengths(max_length: int) -> list[int]:
    """The padded lengths batches are rounded up to, ending exactly at `max_length`."""
    return [b for b in BUCKET_LENGTHS if b < max_length] + [max_length]


class TextEncoder(tf.Module):
    """Tokenizes strings with a KerasHub tokenizer and builds the backbone's input dict."""

    def __init__(
        self,
        tokenizer,
        backbone_inputs: Sequence[str],
        max_length: int,
        pad_to_buckets: bool = True,
    ):
        super().__init__()
        self.tokenizer = tokenizer
        self.input_names = list(backbone_inputs)
        self.max_length = int(max_length)
        self.pad_to_buckets = pad_to_buckets
        lengths = (
            bucket_lengths(self.max_length) if pad_to_buckets else range(1, self.max_length + 1)
        )
        self.bucket_array = np.array(list(lengths), np.int64)
        self.buckets = tf.constant(self.bucket_array, tf.int32)
        self.start_id = int(tokenizer.start_token_id)
        self.end_id = int(tokenizer.end_token_id)
        self.pad_id = int(tokenizer.pad_token_id)

    def token_ids(self, texts: tf.Tensor) -> tf.RaggedTensor:
        """Ragged ids `[start] tokens [end]`, truncated to `max_length`."""
        ids = self.tokenizer(texts)
        if not isinstance(ids, tf.RaggedTensor):
            ids = tf.RaggedTensor.from_tensor(ids)
        ids = tf.cast(ids[:, : self.max_length - 2], tf.int32)
        batch = ids.nrows()
        start = tf.fill([batch, 1], self.start_id)
        end = tf.fill([batch, 1], self.end_id)
        return tf.concat([start, ids, end], axis=1)

    def features(self, ids: tf.Tensor | tf.RaggedTensor) -> dict[str, tf.Tensor]:
        """Pad a batch of ids to its bucket length and build `token_ids`, `padding_mask`, `segment_ids`."""
        if isinstance(ids, tf.RaggedTensor):
            ids = ids.to_tensor(self.pad_id)
        length = tf.shape(ids)[1]
        target = tf.gather(
            self.buckets,
            tf.minimum(tf.searchsorted(self.buckets, [length])[0], tf.size(self.buckets) - 1),
        )
        ids = tf.pad(ids, [[0, 0], [0, target - length]], constant_values=self.pad_id)
        mask = tf.not_equal(ids, self.pad_id)
        available = {"token_ids": ids, "padding_mask": mask, "segment_ids": tf.zeros_like(ids)}
        return {name: available[name] for name in self.input_names}

    def encode(self, texts: tf.Tensor) -> dict[str, tf.Tensor]:
        return self.features(self.token_ids(texts))

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
    def _token_counts(self, texts):
        # In a tf.function the tokenizer returns a RaggedTensor (eagerly it returns Python lists).
        return self.tokenizer(texts).row_lengths()

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
    def _chunk_ids(self, texts):
        ids = self.token_ids(texts)
        return ids.flat_values, ids.row_splits

    def tokenize(
        self, texts: Sequence[str], chunk: int = 4096
    ) -> tuple[list[np.ndarray], np.ndarray]:
        """Every text's ids (`[start] tokens [end]`, truncated) as NumPy arrays, and their lengths."""
        ids: list[np.ndarray] = []
        for i in progress(range(0, len(texts), chunk), desc="tokenising", unit="chunk"):
            flat, splits = (
                t.numpy() for t in self._chunk_ids(tf.constant(list(texts[i : i + chunk])))
            )
            ids.extend(np.split(flat, splits[1:-1]))
        return ids, np.array([len(t) for t in ids], np.int64)

    def padded_lengths(self, lengths: np.ndarray) -> np.ndarray:
        """The length a batch whose longest text has each of `lengths` tokens is padded to."""
        at = np.minimum(np.searchsorted(self.bucket_array, lengths), len(self.bucket_array) - 1)
        return self.bucket_array[at]

    def padded_batch(self, ids: Sequence[np.ndarray]) -> dict[str, np.ndarray]:
        """The backbone's inputs for a batch of token ids, padded as `features` pads (NumPy)."""
        target = int(self.padded_lengths(np.array([max(len(t) for t in ids)]))[0])
        token_ids = np.full((len(ids), target), self.pad_id, np.int32)
        mask = np.zeros((len(ids), target), np.int32)
        for row, t in enumerate(ids):
            token_ids[row, : len(t)] = t
            mask[row, : len(t)] = 1
        available = {
            "token_ids": token_ids,
            "padding_mask": mask,
            "segment_ids": np.zeros_like(token_ids),
        }
        return {name: available[name] for name in self.input_names}

    def lengths(self, texts: Sequence[str], chunk: int = 4096) -> np.ndarray:
        """Token lengths (with start/end tokens, before truncation) of every text, for bucketing."""
        out = []
        for i in progress(range(0, len(texts), chunk), desc="tokenising", unit="chunk"):
            out.append(self._token_counts(tf.constant(list(texts[i : i + chunk]))).numpy() + 2)
        return np.concatenate(out) if out else np.zeros(0, np.int64)


def load_tokenizer(directory: str | Path) -> keras_hub.tokenizers.Tokenizer:
    """Reload a tokenizer written by `tokenizer.save_to_preset(...)`: into a run's `tokenizer/`
    folder, or into a preset directory (`directory` is either one's parent, or the folder itself).

    KerasHub's `Tokenizer.from_preset` also wants the backbone's config.json beside it (to pick the
    class); the tokenizer's own tokenizer.json already names its class, so read that directly.
    """
    directory = Path(directory)
    if (directory / "tokenizer" / "tokenizer.json").exists():
        directory = directory / "tokenizer"
    with open(directory / "tokenizer.json") as f:
        tokenizer = keras.saving.deserialize_keras_object(json.load(f))
    tokenizer.load_preset_assets(str(directory))
    return tokenizer


def bucketed_batches(
    encoder, texts: Sequence[str], y: np.ndarray, batch_size: int, seed: int, steps: int
):
    """Shuffled, tokenized, length-bucketed batches: each batch is padded only to its bucket length."""
    boundaries = [b + 1 for b in bucket_lengths(encoder.max_length)]
    ds = tf.data.Dataset.from_tensor_slices((list(texts), y))
    ds = ds.shuffle(len(texts), seed=seed, reshuffle_each_iteration=True)

    # Tokenize 512 texts per call, then go back to single examples (dense ids cut to their length).
    def tokenize(t, label):
        ids = encoder.token_ids(t)
        return ids.to_tensor(encoder.pad_id), tf.cast(ids.row_lengths(), tf.int32), label

    ds = ds.batch(512).map(tokenize, num_parallel_calls=tf.data.AUTOTUNE).unbatch()
    ds = ds.map(lambda ids, length, label: (ids[:length], label))
    ds = ds.bucket_by_sequence_length(
        lambda ids, label: tf.shape(ids)[0],
        bucket_boundaries=boundaries[:-1],
        bucket_batch_sizes=[batch_size] * len(boundaries),
        padding_values=(encoder.pad_id, None),
    )
    ds = ds.map(
        lambda ids, label: (encoder.features(ids), label), num_parallel_calls=tf.data.AUTOTUNE
    )
    # The batch count is known from the lengths; telling tf.data lets Keras show progress and plan epochs.
    return ds.apply(tf.data.experimental.assert_cardinality(steps)).prefetch(tf.data.AUTOTUNE)


def training_batches(
    encoder: TextEncoder,
    texts: Sequence[str],
    y: np.ndarray,
    batch_size: int,
    seed: int,
    lengths: np.ndarray,
) -> tuple[tf.data.Dataset, int]:
    """Shuffled training batches and how many there are, for the encoder's padding: bucketed by
    length with `pad_to_buckets` (XLA compiles one program per batch shape), else length-grouped,
    each batch padded to its own longest text: 9% faster training without XLA (3% of the tokens
    are padding instead of 17% on SST-2; benchmarks/RESULTS.md). `lengths`: the texts' token counts."""
    if not encoder.pad_to_buckets:
        return length_grouped_batches(encoder, texts, y, batch_size, seed), math.ceil(
            len(texts) / batch_size
        )
    steps = bucketed_steps(lengths, encoder.max_length, batch_size)
    return bucketed_batches(encoder, texts, y, batch_size, seed, steps), steps


def bucketed_steps(lengths: np.ndarray, max_length: int, batch_size: int) -> int:
    """How many batches length buckets make of texts of these token `lengths` (cut at `max_length`)."""
    buckets = np.searchsorted(bucket_lengths(max_length), np.minimum(lengths, max_length))
    return int(sum(math.ceil(count / batch_size) for count in np.bincount(buckets) if count))


def length_grouped_batches(
    encoder,
    texts: Sequence[str],
    y: np.ndarray,
    batch_size: int,
    seed: int,
    group_batches: int = 50,
):
    """Shuffled batches, each padded only to its own longest text: the examples of every
    `group_batches` batches are sorted by length before batching (Hugging Face's group_by_length),
    and the batches are then shuffled."""
    ds = tf.data.Dataset.from_tensor_slices((list(texts), y))
    ds = ds.shuffle(len(texts), seed=seed, reshuffle_each_iteration=True)

    def sort_group(t, label):
        ids = encoder.token_ids(t)
        lengths = tf.cast(ids.row_lengths(), tf.int32)
        order = tf.argsort(lengths, direction="DESCENDING", stable=True)
        return (
            tf.gather(ids.to_tensor(encoder.pad_id), order),
            tf.gather(lengths, order),
            tf.gather(label, order),
        )

    ds = (
        ds.batch(group_batches * batch_size)
        .map(sort_group, num_parallel_calls=tf.data.AUTOTUNE)
        .unbatch()
    )
    ds = ds.map(lambda ids, length, label: (ids[:length], label))
    ds = ds.padded_batch(batch_size, padding_values=(encoder.pad_id, None))
    # Sorting leaves each group's batches longest first; shuffling the batches undoes that order
    # (SGD should not see lengths, a proxy for the kind of text, in sequence).
    ds = ds.shuffle(group_batches, seed=seed + 1, reshuffle_each_iteration=True)
    ds = ds.map(
        lambda ids, label: (encoder.features(ids), label), num_parallel_calls=tf.data.AUTOTUNE
    )
    # groups hold whole batches, so only the last batch is short
    steps = -(-len(texts) // batch_size)
    return ds.apply(tf.data.experimental.assert_cardinality(steps)).prefetch(tf.data.AUTOTUNE)


def feature_batches(
    features: np.ndarray,
    y: np.ndarray,
    batch_size: int,
    seed: int | None = None,
    lengths: np.ndarray | None = None,
    max_length: int = 0,
    bucketed: bool = False,
    group_batches: int = 50,
) -> tf.data.Dataset:
    """Batches of (sentence vectors computed once, labels): without `seed` in order; with it in
    exactly the order `training_batches` gives the texts they come from: the same shuffles
    (tf.data's permutations depend on the seed and the count alone) and the same grouping by
    length (the texts' `lengths`, cut at `max_length` as the encoder cuts them), bucketed
    (`bucketed_batches`) or grouped (`length_grouped_batches`)."""
    if seed is None:
        return (
            tf.data.Dataset.from_tensor_slices((features, y))
            .batch(batch_size)
            .prefetch(tf.data.AUTOTUNE)
        )
    cut = np.minimum(lengths, max_length).astype(np.int32)
    ds = tf.data.Dataset.from_tensor_slices((features, cut, y))
    ds = ds.shuffle(len(y), seed=seed, reshuffle_each_iteration=True)
    if bucketed:
        boundaries = [b + 1 for b in bucket_lengths(max_length)]
        ds = ds.bucket_by_sequence_length(
            lambda vector, length, label: length,
            bucket_boundaries=boundaries[:-1],
            bucket_batch_sizes=[batch_size] * len(boundaries),
        )
        steps = bucketed_steps(cut, max_length, batch_size)
    else:

        def sort_group(vectors, group_lengths, labels):
            order = tf.argsort(group_lengths, direction="DESCENDING", stable=True)
            return (
                tf.gather(vectors, order),
                tf.gather(group_lengths, order),
                tf.gather(labels, order),
            )

        ds = ds.batch(group_batches * batch_size).map(sort_group).unbatch().batch(batch_size)
        ds = ds.shuffle(group_batches, seed=seed + 1, reshuffle_each_iteration=True)
        steps = -(-len(y) // batch_size)
    ds = ds.map(lambda vectors, group_lengths, labels: (vectors, labels))
    return ds.apply(tf.data.experimental.assert_cardinality(steps)).prefetch(tf.data.AUTOTUNE)


def length_sorted_batches(encoder, texts: Sequence[str], y: np.ndarray | None, batch_size: int):
    """Batches of texts sorted by length (little padding); returns the dataset and the sort order."""
    order = np.argsort(encoder.lengths(texts), kind="stable")
    sorted_texts = tf.constant([texts[i] for i in order])
    ds = tf.data.Dataset.from_tensor_slices(sorted_texts if y is None else (sorted_texts, y[order]))
    ds = ds.batch(batch_size).map(
        (lambda t: encoder.encode(t))
        if y is None
        else (lambda t, label: (encoder.encode(t), label)),
        num_parallel_calls=tf.data.AUTOTUNE,
    )
    return ds.prefetch(tf.data.AUTOTUNE), order


# On a CPU a forward pass costs about as much as this many more tokens: on the project's 2-core
# CPU, MiniLM-L6 took 10.4 ms a batch plus 0.36 ms a token (benchmarks/RESULTS.md, "Text inference").
CPU_BATCH_COST_TOKENS = 32


def batch_cost_tokens(max_batch: int, max_length: int) -> int:
    """What `length_batches` should count a batch as, in tokens, on this machine: measured on CPUs;
    with a GPU or TPU, where a batch of any size costs about the same, the fewest batches (not
    measured there)."""
    accelerated = tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("TPU")
    return max_batch * max_length if accelerated else CPU_BATCH_COST_TOKENS


def length_batches(
    lengths: Sequence[int],
    max_batch: int,
    batch_cost: float = CPU_BATCH_COST_TOKENS,
) -> list[np.ndarray]:
    """Split examples into batches of at most `max_batch` that cost the fewest padded tokens plus
    `batch_cost` tokens a batch, each batch padded to its longest example. Returns index arrays
    into `lengths`, ordered by length (their concatenation sorts `lengths`).

    Fixed batches of 64 over SST-2 dev sorted by length pad 6.7% of their tokens; this plan pads
    1.9% in 22 batches instead of 14. It is exact: sorted, some optimal plan starts every batch at
    the first example of a length or right after a full batch (moving a batch's first example into
    an earlier batch that has room and ends at the same length never costs more), so only the
    starts of the distinct lengths need trying, each followed by full batches.

    >>> [b.tolist() for b in length_batches([5, 5, 9, 5, 30], max_batch=4, batch_cost=8)]
    [[0, 1, 3], [2], [4]]
    >>> [b.tolist() for b in length_batches([5, 5, 9, 5, 30], max_batch=4, batch_cost=20)]
    [[0, 1, 3, 2], [4]]
    """
    if max_batch < 1:
        raise ValueError(f"max_batch must be at least 1, not {max_batch}")
    lengths = np.asarray(lengths, np.int64)
    order = np.argsort(lengths, kind="stable")
    ordered = lengths[order]
    n = len(ordered)
    if n == 0:
        return []
    anchors = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]]).tolist() + [n]
    best, came_from = {0: 0.0}, {}
    for k, end in enumerate(anchors[1:], start=1):
        for start in anchors[:k]:
            full = (
                end - start - 1
            ) // max_batch  # full batches before the last one, which ends at `end`
            # their longest
            full_ends = ordered[start + max_batch - 1 : start + full * max_batch : max_batch]
            cost = (
                best[start]
                + max_batch * full_ends.sum()
                + (end - start - full * max_batch) * ordered[end - 1]
                + (full + 1) * batch_cost
            )
            if cost < best.get(end, np.inf):
                best[end], came_from[end] = cost, start
    bounds, end = [n], n
    while end:
        start = came_from[end]
        bounds[:0] = list(range(start, end, max_batch))
        end = start
    return [order[a:b] for a, b in itertools.pairwise(bounds)]


def predict_probabilities(
    model, encoder: TextEncoder, texts: Sequence[str], batch_size: int = 64, features: bool = False
):
    """Class probabilities for texts, in their original order; with `features`, also the pooled
    sentence vectors the head sees (`(probabilities, vectors)`), from the same pass.

    The texts are tokenised once, split by `length_batches` into batches of at most `batch_size`
    with little padding, and padded per batch in NumPy; each batch goes through one traced forward
    pass (`compiled_forward`). Keras's `predict` loop, with a new tf.data pipeline per call, took
    2.5x as long on SST-2 dev, and fixed batches of 64 sorted texts 1.05x (benchmarks/RESULTS.md)."""

    ids, lengths = encoder.tokenize(texts)
    batches = length_batches(
        encoder.padded_lengths(lengths),
        batch_size,
        batch_cost_tokens(batch_size, encoder.max_length),
    )
    order = np.concatenate(batches) if batches else np.zeros(0, np.int64)
    forward = compiled_forward(model, encoder.input_names, features)
    outputs = [
        forward(encoder.padded_batch([ids[i] for i in batch]))
        for batch in progress(batches, desc="predicting")
    ]
    logits = (
        np.concatenate([np.asarray(out[0] if features else out) for out in outputs])
        if outputs
        else np.zeros((0, 0))
    )
    probabilities = np.empty_like(logits, dtype="float32")
    probabilities[order] = keras.ops.convert_to_numpy(
        keras.ops.softmax(logits.astype("float32"), axis=-1)
    )
    if not features:
        return probabilities
    vectors = (
        np.concatenate([np.asarray(out[1]) for out in outputs])
        if outputs
        else np.zeros((0, 0), "float32")
    )
    unsorted = np.empty_like(vectors)
    unsorted[order] = vectors
    return probabilities, unsorted


_FORWARDS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def compiled_forward(model, input_names: Sequence[str], features: bool = False):
    """`model(inputs, training=False)` as a `tf.function` traced once for any batch shape (XLA, when
    the model was compiled with it, still compiles per shape), cached per model. With `features`, it
    returns `(logits, head features)` (`zoo.heads.head_features`)."""

    cache = _FORWARDS.setdefault(model, {})
    if features not in cache:
        network = head_features(model, with_logits=True) if features else model
        signature = {name: tf.TensorSpec([None, None], tf.int32) for name in input_names}
        cache[features] = tf.function(
            lambda inputs: network(inputs, training=False),
            input_signature=[signature],
            jit_compile=getattr(model, "jit_compile", False) is True,
        )
    return cache[features]
