"""Words in, per-word tag logits out: the token-classification input path, inside the TensorFlow graph.

KerasHub has no token-classification task, so this module holds what one needs around a text
backbone, as graph code shared by training, evaluation, `predict` and the exported SavedModel:

- `pretokenize`: raw strings -> words (runs of letters/digits/marks, or single other characters)
  with the character offsets of each word in the original string.
- `TokenEncoder.subword_ids`: words -> subword ids per word (the first subword of a word carries
  the word's label; the others are left out of the loss and the metrics).
- `capitalised`: whether each word has a capital letter (uncased backbones lowercase it away, and it is
  the strongest cue for names).
- `TokenEncoder.word_logits`: runs the model over windows of at most `max_length` tokens (longer
  sentences are split into overlapping windows and merged back, never truncated) and returns one
  logit vector per word.
- `encode_windows` / `window_batches`: labelled sentences -> length-grouped training batches of
  the same windows; `Tagger`: sentences -> word tags and probabilities (batched, constrained decoding).

Example:
    >>> words, starts, ends = pretokenize(tf.constant(["Hello,  Zoë!"]))
    >>> words.to_list(), starts.to_list(), ends.to_list()
    ([[b'Hello', b',', b'Zo\\xc3\\xab', b'!']], [[0, 5, 8, 11]], [[5, 6, 11, 12]])
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import tensorflow as tf
import tensorflow_text as tf_text

from zoo.heads import head_features
from zoo.progress import progress
from zoo.text_inputs import batch_cost_tokens, length_batches

# A word is a run of letters, digits and combining marks, or any other single visible character
# (punctuation, symbols, emoji): "U.S.-based" -> U . S . - based, as BERT's basic tokenizer splits.
WORD_PATTERN = r"[\pL\pN\pM]+|[^\s\p{Z}\p{C}\pL\pN\pM]"
SPACE_PATTERN = r"[\s\p{Z}\p{C}]+"  # Unicode spaces and invisible characters separate words


def pretokenize(texts: tf.Tensor) -> tuple[tf.RaggedTensor, tf.RaggedTensor, tf.RaggedTensor]:
    """`(words, starts, ends)` for a batch of strings: ragged `[batch, (words)]`, offsets in characters
    (Unicode code points, as Python indexes `str`), so `text[start:end]` is the word."""
    words, byte_starts, byte_ends = tf_text.regex_split_with_offsets(
        texts, SPACE_PATTERN + "|" + WORD_PATTERN, WORD_PATTERN
    )
    _, char_byte_offsets = tf.strings.unicode_decode_with_offsets(texts, "UTF-8", errors="replace")
    # A byte offset's character index is the number of characters that start before it.
    big = tf.int64.max
    chars = char_byte_offsets.to_tensor(big)

    def to_chars(offsets: tf.RaggedTensor) -> tf.RaggedTensor:
        dense = tf.searchsorted(chars, offsets.to_tensor(0), side="left")
        return tf.RaggedTensor.from_tensor(dense, lengths=offsets.row_lengths())

    return words, to_chars(byte_starts), to_chars(byte_ends)


def capitalised(words: tf.Tensor) -> tf.Tensor:
    """1 for each word with an upper-case letter ("Paris", "IBM", "McDonald"), else 0 (int32, any shape)."""
    return tf.cast(tf.strings.regex_full_match(words, r".*\p{Lu}.*"), tf.int32)


def _unknown_token_id(tokenizer) -> int:
    """The id of the tokenizer's unknown token (its pad id when it has none)."""
    if getattr(tokenizer, "unk_token_id", None) is not None:
        return int(tokenizer.unk_token_id)
    for token in (getattr(tokenizer, "oov_token", None), "[UNK]", "<unk>"):
        try:
            if token is not None:
                return int(tokenizer.token_to_id(token))
        except (KeyError, ValueError, TypeError):
            continue
    return int(tokenizer.pad_token_id)


class TokenEncoder(tf.Module):
    """Subword ids for words, backbone inputs for windows of them, and windowed per-word logits.

    `case_feature="segment"` sets the backbone's segment id to 1 on the subwords of capitalised
    words, so an uncased backbone sees capitalisation in context (BERT-style backbones have a
    trained two-row segment embedding that single-sentence tagging leaves unused); `none` ignores case.
    """

    def __init__(
        self, tokenizer, backbone_inputs: Sequence[str], max_length: int, case_feature: str = "none"
    ):
        super().__init__()
        self.tokenizer = tokenizer
        self.input_names = list(backbone_inputs)
        self.max_length = int(max_length)
        self.case_feature = case_feature
        self.start_id = int(tokenizer.start_token_id)
        self.end_id = int(tokenizer.end_token_id)
        self.pad_id = int(tokenizer.pad_token_id)
        self.unk_id = _unknown_token_id(tokenizer)
        # Byte-level BPE (RoBERTa) marks a word that follows a space; words inside a sentence do.
        self.space_prefix = type(tokenizer).__name__.endswith(
            ("BytePairTokenizer", "RobertaTokenizer", "GPT2Tokenizer")
        )

    @property
    def window(self) -> int:
        """Subwords per window (the sequence length less the start and end tokens)."""
        return self.max_length - 2

    @property
    def stride(self) -> int:
        """Windows of a long sentence start this far apart (half a window: every word is scored by
        a window that has at least a quarter window of context on each side, except at the ends)."""
        return max(self.window // 2, 1)

    def padded_lengths(self, subwords: np.ndarray) -> np.ndarray:
        """The length `word_logits` pads a batch's windows to when its longest sentence has each of
        `subwords` subwords: at most one window, plus the start and end tokens. (A longer sentence
        adds windows of that length whatever its batch-mates, so they do not change the padding.)"""
        return np.minimum(np.maximum(subwords, 1), self.window) + 2

    def subword_ids(self, words: tf.RaggedTensor) -> tf.RaggedTensor:
        """`[batch, (words), (subwords)]` int32 ids; a word the tokenizer maps to nothing gets `[UNK]`."""
        ids = self._tokenize(words.flat_values)
        empty = tf.cast(tf.equal(ids.row_lengths(), 0), tf.int64)
        unk = tf.RaggedTensor.from_row_lengths(tf.fill([tf.reduce_sum(empty)], self.unk_id), empty)
        ids = tf.concat([ids, unk], axis=1)
        return tf.RaggedTensor.from_row_splits(ids, words.row_splits)

    def subword_counts(self, sentences: Sequence[Sequence[str]], chunk: int = 4096) -> np.ndarray:
        """How many subwords each sentence has (start and end tokens not counted)."""
        counts = [np.zeros(0, np.int64)]
        for i in range(0, len(sentences), chunk):
            words = tf.ragged.constant(
                [list(s) for s in sentences[i : i + chunk]], dtype=tf.string, ragged_rank=1
            )
            counts.append(self.subword_ids(words).merge_dims(1, 2).row_lengths().numpy())
        return np.concatenate(counts)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
    def _tokenize(self, flat_words):
        # In a tf.function the tokenizer returns a RaggedTensor (eagerly it returns Python lists).
        if self.space_prefix:
            flat_words = tf.strings.join([" ", flat_words])
        ids = self.tokenizer(flat_words)
        if not isinstance(ids, tf.RaggedTensor):
            ids = tf.RaggedTensor.from_tensor(ids)
        return tf.cast(ids, tf.int32)

    def features(self, token_ids: tf.Tensor, capitals: tf.Tensor) -> dict[str, tf.Tensor]:
        """Backbone inputs for padded windows `[n, length]` that already hold the start and
        end tokens; `capitals` says which positions belong to capitalised words."""
        available = {
            "token_ids": token_ids,
            "padding_mask": tf.not_equal(token_ids, self.pad_id),
            "segment_ids": tf.zeros_like(token_ids),
        }
        if self.case_feature == "segment":
            available["segment_ids"] = tf.cast(capitals, token_ids.dtype)
        return {name: available[name] for name in self.input_names}

    def word_logits(self, model, words: tf.RaggedTensor) -> tf.RaggedTensor:
        """Float32 logits `[batch, (words), tags]` for a batch of word sequences (ragged strings)."""
        sub = self.subword_ids(words)  # [b, (w), (s)]
        per_word = sub.row_lengths(axis=2)  # [b, (w)]
        flat = sub.merge_dims(1, 2)  # [b, (subwords)]
        capitals = tf.repeat(capitalised(words.flat_values), per_word.flat_values)
        capitals = tf.RaggedTensor.from_row_splits(capitals, flat.row_splits)
        lengths = tf.cast(flat.row_lengths(), tf.int32)
        ids = flat.to_tensor(self.pad_id)
        sub_capitals = capitals.to_tensor(0)

        # Windows: `n` frames of `width` subwords, `stride` apart (one frame when the batch fits).
        total = tf.maximum(tf.shape(ids)[1], 1)
        width = tf.minimum(self.window, total)
        n = 1 + tf.maximum(0, (total - width + self.stride - 1) // self.stride)
        padded = (n - 1) * self.stride + width

        def frames(x, value):
            x = tf.pad(x, [[0, 0], [0, padded - tf.shape(x)[1]]], constant_values=value)
            return tf.signal.frame(x, width, self.stride, axis=1)  # [b, n, width]

        starts = tf.range(n) * self.stride
        window_lengths = tf.clip_by_value(lengths[:, None] - starts[None, :], 0, width)  # [b, n]
        batch = tf.shape(ids)[0]
        window_ids = tf.reshape(frames(ids, self.pad_id), [batch * n, width])
        window_capitals = tf.reshape(frames(sub_capitals, 0), [batch * n, width])
        window_lengths = tf.reshape(window_lengths, [-1])
        column = tf.range(width + 2)[None, :]
        token_ids = tf.concat(
            [
                tf.fill([batch * n, 1], self.start_id),
                window_ids,
                tf.fill([batch * n, 1], self.pad_id),
            ],
            axis=1,
        )
        token_ids = tf.where(column == window_lengths[:, None] + 1, self.end_id, token_ids)
        window_capitals = tf.pad(window_capitals, [[0, 0], [1, 1]])
        # A sentence has its own windows, as in training: one if it fits, else as many as it needs.
        # Only those go through the model, so a sentence is tagged the same whatever its batch-mates.
        own = 1 + tf.maximum(0, (lengths - self.window + self.stride - 1) // self.stride)  # [b]
        used = tf.where(tf.reshape(tf.range(n)[None, :] < own[:, None], [-1]))[:, 0]
        logits = model(
            self.features(tf.gather(token_ids, used), tf.gather(window_capitals, used)),
            training=False,
        )
        logits = tf.cast(logits, tf.float32)
        logits = tf.scatter_nd(
            used[:, None],
            logits,
            tf.stack(
                [
                    tf.cast(batch * n, tf.int64),
                    tf.cast(width + 2, tf.int64),
                    tf.cast(tf.shape(logits)[-1], tf.int64),
                ]
            ),
        )
        logits = tf.reshape(logits, [batch, n, width + 2, -1])

        # Each subword takes its logits from the window where it sits most centrally.
        position = tf.range(tf.shape(ids)[1])[None, :]  # [1, L]
        # ceil((p - width + 1) / stride)
        earliest = tf.maximum(0, (position - width + self.stride) // self.stride)
        latest = tf.minimum(position // self.stride, own[:, None] - 1)  # [b, L]
        k = tf.minimum(tf.maximum((position - self.window // 4) // self.stride, earliest), latest)
        # +1: the start token; positions past a sentence's end (padding, never read) are clamped.
        index = tf.stack([k, tf.minimum(position - k * self.stride + 1, width + 1)], axis=-1)
        sub_logits = tf.gather_nd(logits, index, batch_dims=1)

        # A word's logits are its first subword's.
        first = tf.cumsum(per_word, axis=1, exclusive=True)
        word = tf.gather(sub_logits, tf.cast(first.to_tensor(0), tf.int32), batch_dims=1)
        return tf.RaggedTensor.from_tensor(word, lengths=words.row_lengths())


def allowed_transitions(tags: Sequence[str]) -> np.ndarray:
    """`[tags + 1, tags + 1]` booleans for IOB2 decoding, the last row/column being the sentence start
    and end: `I-X` may only follow `B-X` or `I-X`."""
    n = len(tags)
    allowed = np.ones((n + 1, n + 1), bool)
    for j, tag in enumerate(tags):
        if tag.startswith("I-"):
            allowed[:, j] = [i < n and tags[i] in (f"B-{tag[2:]}", tag) for i in range(n + 1)]
    return allowed


def decode_tags(
    logits: tf.RaggedTensor, allowed: np.ndarray | None = None
) -> tuple[tf.RaggedTensor, tf.RaggedTensor]:
    """`(tag ids, probabilities of those tags)` per word. With `allowed` transitions (see
    `allowed_transitions`) the best tag sequence that obeys them (Viterbi over the per-word
    log-probabilities), else each word's most probable tag."""
    log_probabilities = logits.with_flat_values(tf.nn.log_softmax(logits.flat_values, axis=-1))
    if allowed is None:
        best = tf.argmax(log_probabilities.flat_values, axis=-1, output_type=tf.int32)
    else:
        dense = log_probabilities.to_tensor(0.0)
        best = tf_text.viterbi_constrained_sequence(
            dense,
            tf.cast(logits.row_lengths(), tf.int32),
            allowed_transitions=allowed,
            use_log_space=True,
            use_start_and_end_states=True,
        )
        best = tf.cast(best.flat_values, tf.int32)
    chosen = tf.gather(log_probabilities.flat_values, best, batch_dims=1)
    return logits.with_flat_values(best), logits.with_flat_values(tf.exp(chosen))


@dataclass
class Windows:
    """Training examples: subword ids with start/end tokens, per-subword tag ids (-1: not scored)
    and capitalisation flags, padded in arrays with the true lengths beside."""

    ids: np.ndarray
    labels: np.ndarray
    capitals: np.ndarray
    lengths: np.ndarray
    windowed_sentences: int  # sentences longer than one window


def encode_windows(
    encoder: TokenEncoder, sentences: Sequence[Sequence[str]], tag_ids: Sequence[Sequence[int]]
) -> Windows:
    """Subwords and first-subword labels (`tag_ids`, one per word) of every sentence, long sentences
    cut into the same overlapping windows that prediction uses, for training."""
    words = tf.ragged.constant(sentences, dtype=tf.string)
    sub = encoder.subword_ids(words)
    per_word = sub.row_lengths(axis=2).flat_values.numpy()
    flat_ids = sub.flat_values.numpy()
    capitals = capitalised(words.flat_values).numpy()
    word_splits = words.row_splits.numpy()
    subword_ends = np.cumsum(per_word)
    examples = []
    windowed = 0
    for s, sentence_tags in enumerate(tag_ids):
        w0, w1 = word_splits[s], word_splits[s + 1]
        first, last = (subword_ends[w0 - 1] if w0 else 0), subword_ends[w1 - 1]
        ids = flat_ids[first:last]
        counts = per_word[w0:w1]
        labels = np.full(len(ids), -1, np.int32)
        labels[np.cumsum(counts) - counts] = sentence_tags
        sub_capitals = np.repeat(capitals[w0:w1], counts)
        starts = [0]
        if len(ids) > encoder.window:
            windowed += 1
            starts = [
                k * encoder.stride
                for k in range(1 + math.ceil((len(ids) - encoder.window) / encoder.stride))
            ]
        for start in starts:
            end = start + encoder.window
            examples.append(
                (
                    np.concatenate([[encoder.start_id], ids[start:end], [encoder.end_id]]),
                    np.concatenate([[-1], labels[start:end], [-1]]),
                    np.concatenate([[0], sub_capitals[start:end], [0]]),
                )
            )
    lengths = np.array([len(e[0]) for e in examples], np.int32)
    width = int(lengths.max())

    def stack(k, fill):
        out = np.full((len(examples), width), fill, np.int32)
        for i, e in enumerate(examples):
            out[i, : len(e[k])] = e[k]
        return out

    return Windows(stack(0, encoder.pad_id), stack(1, -1), stack(2, 0), lengths, windowed)


def window_batches(
    encoder: TokenEncoder, windows: Windows, batch_size: int, seed: int, group_batches: int = 50
):
    """Shuffled batches of windows, each cut to its own longest window: the windows of every
    `group_batches` batches are sorted by length before batching (Hugging Face's group_by_length),
    so that little of a batch is padding. Returns the dataset and its number of batches."""
    ds = tf.data.Dataset.from_tensor_slices(
        (windows.ids, windows.labels, windows.capitals, windows.lengths)
    )
    ds = ds.shuffle(len(windows.lengths), seed=seed, reshuffle_each_iteration=True)

    def sort_group(*columns):
        order = tf.argsort(columns[-1], direction="DESCENDING", stable=True)
        return tuple(tf.gather(column, order) for column in columns)

    def cut(ids, labels, capitals, lengths):
        longest = tf.reduce_max(lengths)
        return encoder.features(ids[:, :longest], capitals[:, :longest]), *token_loss_weights(
            labels[:, :longest]
        )

    ds = (
        ds.batch(group_batches * batch_size)
        .map(sort_group, num_parallel_calls=tf.data.AUTOTUNE)
        .unbatch()
    )
    # undo the groups' longest-first order
    ds = ds.batch(batch_size).shuffle(group_batches, seed=seed + 1)
    ds = ds.map(cut, num_parallel_calls=tf.data.AUTOTUNE)
    # groups hold whole batches: only the last is short
    steps = math.ceil(len(windows.lengths) / batch_size)
    return ds.apply(tf.data.experimental.assert_cardinality(steps)).prefetch(
        tf.data.AUTOTUNE
    ), steps


def token_loss_weights(labels: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """`(labels, weights)` for a batch whose unscored tokens have label -1: those get label 0 and
    weight 0, the scored ones `tokens / scored` of the whole batch, so that Keras's mean over the
    batch's tokens is the mean over its scored tokens.

    Computed on the global batch, before a `tf.distribute` strategy splits it: each replica's loss
    is then its scored tokens' share of the global batch's mean, and the replicas' gradients add up
    to the one-device gradient. (Keras's own `ignore_class` masking averages over each replica's
    scored tokens instead, which differs as soon as the replicas' halves hold different numbers of
    them.)"""
    scored = tf.cast(labels >= 0, tf.float32)
    weight = tf.cast(tf.size(labels), tf.float32) / tf.maximum(tf.reduce_sum(scored), 1.0)
    return tf.maximum(labels, 0), scored * weight


class Tagger:
    """Word-level tags and their probabilities for sentences, batched by length, through the same
    graph code as the exported SavedModel (`TokenEncoder.word_logits`, `decode_tags`).

    `constrained` decoding picks the most probable tag sequence that is valid IOB2 (no `I-X` after
    `O` or another type) instead of each word's most probable tag.
    """

    def __init__(
        self,
        model,
        encoder: TokenEncoder,
        tags: Sequence[str],
        constrained: bool = True,
        batch_size: int = 64,
    ):
        self.model, self.encoder, self.tags, self.constrained = (
            model,
            encoder,
            list(tags),
            constrained,
        )
        self.batch_size = batch_size
        allowed = allowed_transitions(self.tags) if constrained else None
        self._decode = tf.function(
            lambda words: decode_tags(encoder.word_logits(model, words), allowed),
            input_signature=[
                tf.RaggedTensorSpec(
                    [None, None], tf.string, ragged_rank=1, row_splits_dtype=tf.int64
                )
            ],
        )

    def count_windowed(self, sentences: Sequence[Sequence[str]]) -> int:
        """How many sentences are longer than one window (and so are tagged in overlapping windows)."""
        return int((self.encoder.subword_counts(sentences) > self.encoder.window).sum())

    def __call__(
        self, sentences: Sequence[Sequence[str]]
    ) -> tuple[list[list[str]], list[list[float]]]:
        # Batches planned for the least padding, as text prediction's (zoo.text_inputs.length_batches).
        padded = self.encoder.padded_lengths(self.encoder.subword_counts(sentences))
        tags: list = [None] * len(sentences)
        scores: list = [None] * len(sentences)
        batches = length_batches(
            padded, self.batch_size, batch_cost_tokens(self.batch_size, self.encoder.max_length)
        )
        for chunk in progress(batches, desc="tagging"):
            batch = [list(sentences[j]) or [""] for j in chunk]  # an empty sentence: one empty word
            ids, probabilities = self._decode(
                tf.ragged.constant(batch, dtype=tf.string, row_splits_dtype=tf.int64)
            )
            for j, row_ids, row_p in zip(chunk, ids.to_list(), probabilities.to_list()):
                n = len(sentences[j])
                tags[j] = [self.tags[k] for k in row_ids[:n]]
                scores[j] = row_p[:n]
        return tags, scores

    def span_vectors(
        self, sentences: Sequence[Sequence[str]], spans: Sequence[tuple[int, int, int]]
    ) -> np.ndarray:
        """The vectors the head sees, averaged over the words of each span `(sentence, start, end)`
        (`[n, hidden]`; for the embedding projector)."""

        features = head_features(self.model)
        # word_logits reads each word's first-subword output of any per-token model, here the features;
        # a graph, as for tagging (eager, it took as long as tagging the whole CoNLL dev set).
        word_vectors = tf.function(
            lambda words: self.encoder.word_logits(features, words),
            input_signature=[
                tf.RaggedTensorSpec(
                    [None, None], tf.string, ragged_rank=1, row_splits_dtype=tf.int64
                )
            ],
        )
        needed = sorted({s for s, *_ in spans})
        by_sentence: dict[int, np.ndarray] = {}
        for i in range(0, len(needed), self.batch_size):
            chunk = needed[i : i + self.batch_size]
            words = tf.ragged.constant(
                [sentences[s] for s in chunk], dtype=tf.string, row_splits_dtype=tf.int64
            )
            for s, vectors in zip(chunk, word_vectors(words)):
                by_sentence[s] = vectors.numpy()
        return (
            np.stack([by_sentence[s][start:end].mean(axis=0) for s, start, end in spans])
            if spans
            else np.zeros((0, 0))
        )
