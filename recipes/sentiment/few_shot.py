"""Few-shot text classification (`model.finetune: few_shot`): SetFit's two stages, on any KerasHub
text backbone, trained by the engine as two phases of one run.

1. `contrastive`: the backbone and its pooling learn to put texts of a class close together and
   texts of different classes apart. Every batch holds the same number of examples of each class,
   and the loss uses every pair of the batch at once (`contrastive_loss`): a batch of B texts
   gives B(B-1)/2 pairs for B encodings, where SetFit encodes both texts of every sampled pair.
2. `head`: the classification head trains on the tuned sentence vectors, computed once.

Both stages run a fixed number of steps (`FewShotConfig`); nothing is chosen on validation data.
The result is the same kind of model as any sentiment run (backbone, pooling, head), so evaluate,
predict, export and TensorBoard treat it as they treat every run.

    keras-zoo train sentiment --set data.train=train.tsv --set data.examples_per_class=8 \\
        --set model.finetune=few_shot
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import keras
import numpy as np
import tensorflow as tf

from recipes.engine import training
from recipes.engine.config import TrainConfig
from recipes.engine.contract import Phase
from zoo.heads import split_at_head
from zoo.text_inputs import TextEncoder, feature_batches, predict_probabilities


@dataclass
class FewShotConfig:
    """The `few_shot` section: the fixed training budget of `model.finetune: few_shot`. Defaults
    chosen on SST-2 train rows outside the benchmark's samples (benchmarks/RESULTS.md)."""

    LIMITS: ClassVar[dict[str, str]] = {
        "pair_passes": ">= 0",
        "batch_size": ">= 2",
        "learning_rate": "> 0",
        "temperature": "> 0",
        "head_steps": ">= 1",
        "head_learning_rate": "> 0",
        "head_c": "> 0",
        "auto_below": ">= 0",
    }

    # Contrastive steps: enough for every example to be seen `pair_passes` times (a batch of
    # `batch_size` examples holds every pair among them).
    pair_passes: float = 16.0
    batch_size: int = 16
    learning_rate: float = 5e-5
    # cosine: SetFit's loss (cosine similarity regressed to 1 for a pair of one class, 0 for two);
    # supervised_contrastive: Khosla et al. (2020), softmax over the batch at `temperature`
    # (1.5-2 points lower at 32 examples a class, RESULTS.md)
    loss: Literal["cosine", "supervised_contrastive"] = "cosine"
    temperature: float = 0.05
    # The head is a logistic regression on the tuned sentence vectors, as SetFit's (scikit-learn's
    # LogisticRegression, C=1): `head_steps` full-batch steps on the mean cross-entropy plus
    # |kernel|^2 / (2 C n), scikit-learn's penalty divided by C n; no dropout.
    head_steps: int = 200
    head_learning_rate: float = 1e-2
    head_c: float = 1.0
    # model.finetune=auto: few_shot when the smallest class has fewer training examples than this.
    # few_shot beat ordinary fine-tuning on SST-2 at 8, 16 and 32 per class by 2.2-5.2 points
    # (RESULTS.md, "Few-shot"); fine-tuning at 64 per class and above was not measured against it.
    auto_below: int = 64


def resolve_finetune(mode: str, class_counts: Sequence[int], cfg: FewShotConfig) -> str:
    """`model.finetune` as the run trains it: `auto` is `few_shot` when the smallest class has
    fewer than `few_shot.auto_below` examples, else `full` (said in one line)."""
    if mode != "auto":
        return mode
    smallest = min(class_counts)
    chosen = "few_shot" if smallest < cfg.auto_below else "full"
    print(
        f"model.finetune=auto: {chosen} (the smallest class has {smallest} training examples; "
        f"few_shot below few_shot.auto_below={cfg.auto_below})",
        flush=True,
    )
    return chosen


def contrastive_steps(examples: int, cfg: FewShotConfig) -> int:
    """The contrastive stage's optimizer steps: `pair_passes` passes over the examples."""
    return max(1, math.ceil(cfg.pair_passes * examples / cfg.batch_size)) if cfg.pair_passes else 0


def class_balanced_batches(
    encoder: TextEncoder,
    texts: Sequence[str],
    y: np.ndarray,
    batch_size: int,
    seed: int,
    steps: int,
) -> tf.data.Dataset:
    """`steps` batches of (backbone inputs, class ids), the classes taking turns within each
    batch: every class has its shuffled examples dealt round-robin, so a batch of B texts over K
    classes holds B/K of each (and pairs of one class to pull together). A class that runs out
    leaves the turns to the others; the stream restarts, reshuffled, when every class has."""
    classes = np.unique(y)
    texts, y = np.asarray(list(texts), object), np.asarray(y, np.int32)
    per_class = [
        tf.data.Dataset.from_tensor_slices((list(texts[y == c]), y[y == c])).shuffle(
            int((y == c).sum()), seed=seed + int(c), reshuffle_each_iteration=True
        )
        for c in classes
    ]
    turns = tf.data.Dataset.range(len(classes)).repeat(int(np.bincount(y).max()))
    stream = tf.data.Dataset.choose_from_datasets(per_class, turns, stop_on_empty_dataset=False)
    batches = stream.repeat().batch(batch_size, drop_remainder=len(y) >= batch_size).take(steps)
    return batches.map(
        lambda t, label: (encoder.encode(t), label), num_parallel_calls=tf.data.AUTOTUNE
    ).prefetch(tf.data.AUTOTUNE)


def pair_targets(labels: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """`(same, weights)` over a batch's pairs: 1 where two texts share a class; weights 0 on the
    diagonal (no text is paired with itself), and otherwise such that the pairs of one class and
    the pairs of two classes weigh half the loss each, as SetFit's oversampling balances them."""
    labels = tf.reshape(tf.cast(labels, tf.int32), [-1])
    same = tf.cast(tf.equal(labels[:, None], labels[None, :]), tf.float32)
    others = 1.0 - tf.eye(tf.shape(labels)[0])
    positive, negative = same * others, 1.0 - same
    weights = 0.5 * positive / tf.maximum(tf.reduce_sum(positive), 1.0) + 0.5 * negative / (
        tf.maximum(tf.reduce_sum(negative), 1.0)
    )
    return same, weights


def contrastive_loss(kind: str, temperature: float):
    """A Keras loss of (class ids, sentence vectors) over every pair of the batch."""

    def cosine(labels, vectors):
        vectors = tf.math.l2_normalize(tf.cast(vectors, tf.float32), axis=-1)
        same, weights = pair_targets(labels)
        similarity = tf.matmul(vectors, vectors, transpose_b=True)
        return tf.reduce_sum(weights * tf.square(similarity - same))

    def supervised_contrastive(labels, vectors):
        vectors = tf.math.l2_normalize(tf.cast(vectors, tf.float32), axis=-1)
        same, _ = pair_targets(labels)
        others = 1.0 - tf.eye(tf.shape(vectors)[0])
        logits = tf.matmul(vectors, vectors, transpose_b=True) / temperature - 1e9 * (1 - others)
        log_p = logits - tf.reduce_logsumexp(logits, axis=1, keepdims=True)
        positives = same * others
        count = tf.reduce_sum(positives, axis=1)
        anchor = tf.reduce_sum(log_p * positives, axis=1) / tf.maximum(count, 1.0)
        has_pair = tf.cast(count > 0, tf.float32)  # an anchor alone in its class has no pair
        return -tf.reduce_sum(anchor * has_pair) / tf.maximum(tf.reduce_sum(has_pair), 1.0)

    return {"cosine": cosine, "supervised_contrastive": supervised_contrastive}[kind]


def regularised_cross_entropy(logits: keras.layers.Dense, c_times_n: float):
    """Mean cross-entropy plus |kernel|^2 / (2 C n): the objective of scikit-learn's
    LogisticRegression(C) divided by C n (the bias unpenalised)."""
    cross_entropy = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    def loss(labels, predicted):
        kernel = tf.cast(logits.kernel, tf.float32)
        return cross_entropy(labels, predicted) + tf.reduce_sum(kernel**2) / (2.0 * c_times_n)

    return loss


def few_shot_phases(
    whole: keras.Model,
    encoder: TextEncoder,
    texts: Sequence[str],
    y: np.ndarray,
    cfg: FewShotConfig,
    train_cfg: TrainConfig,
) -> list[Phase]:
    """The two phases: the backbone and pooling (`zoo.heads.split_at_head`'s features) on the
    contrastive loss, then the head on the sentence vectors they give, each one epoch of a fixed
    number of steps. The sentence vectors are computed when the head's phase starts."""
    features, head = split_at_head(whole)
    steps = contrastive_steps(len(texts), cfg)
    batch = min(cfg.batch_size, len(texts))

    def prepare_contrastive(model: keras.Model) -> None:
        phase_cfg = dataclasses.replace(train_cfg, learning_rate=cfg.learning_rate)
        model.compile(
            optimizer=training.make_optimizer(phase_cfg, steps, epochs=1),
            loss=contrastive_loss(cfg.loss, cfg.temperature),
            jit_compile=train_cfg.jit_compile,
            run_eagerly=train_cfg.run_eagerly,
        )

    def prepare_head(model: keras.Model) -> None:
        phase_cfg = dataclasses.replace(
            train_cfg, learning_rate=cfg.head_learning_rate, weight_decay=0.0
        )
        model.compile(
            optimizer=training.make_optimizer(phase_cfg, cfg.head_steps, epochs=1),
            loss=regularised_cross_entropy(whole.get_layer("logits"), cfg.head_c * len(texts)),
            metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
            jit_compile=train_cfg.jit_compile,
            run_eagerly=train_cfg.run_eagerly,
        )

    def head_data() -> tuple[Any, None]:
        vectors = predict_probabilities(whole, encoder, list(texts), features=True)[1]
        full_batches = feature_batches(vectors.astype("float32"), y, len(texts))
        return full_batches.repeat().take(cfg.head_steps), None

    return [
        Phase(
            "contrastive",
            1 if steps else 0,
            prepare_contrastive,
            model=features,
            examples=steps * batch,
            data=lambda: (
                class_balanced_batches(encoder, texts, y, batch, train_cfg.seed, steps),
                None,
            ),
        ),
        Phase(
            "head",
            1,
            prepare_head,
            model=head,
            data=head_data,
            examples=cfg.head_steps * len(texts),
        ),
    ]
