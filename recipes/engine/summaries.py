"""What a run shows in TensorBoard beyond Keras's own curves: text tables, precision-recall curves,
the resolved config and the embedding projector.

Every recipe writes the same layout under `runs/<recipe>/<name>/logs/` (see the README's
"Inspecting runs in TensorBoard"):

    train/, validation/    Keras's per-epoch curves, per-step loss, the profile (`--profile`)
    eval_<split>/          the final evaluation: `eval/*` scalars, `<split>/report` table,
                           `<split>/confusion_matrix` image, `<split>/pr_curve/<class>`,
                           `<split>/misclassified` (image grid or text), the embedding projector
    .                      the resolved config as text, the HParams session

Functions that write summaries expect a default writer (`with writer.as_default():`); the projector
is files beside the event files.

    >>> print(markdown_table(["text", "label"], [["a | b", "pos"]]))
    | text | label |
    |---|---|
    | a \\| b | pos |
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf
import yaml
from tensorboard.plugins import projector
from tensorboard.plugins.pr_curve import summary as pr_curve

PR_THRESHOLDS = 101  # precision-recall points per curve


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A Markdown table (TensorBoard's Text tab renders it); cells are escaped to stay one line."""

    def cell(value: Any) -> str:
        return re.sub(r"\s+", " ", str(value)).replace("|", "\\|").strip()

    lines = ["| " + " | ".join(map(cell, header)) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(map(cell, row)) + " |" for row in rows]
    return "\n".join(lines)


def config_text(cfg: Any) -> str:
    """The resolved config as YAML, indented so that Markdown shows it verbatim."""

    body = yaml.safe_dump(dataclasses.asdict(cfg), sort_keys=False)
    return "\n".join("    " + line for line in body.splitlines())


def write_text_summary(logdir: Path, name: str, text: str, step: int = 0) -> None:
    """One text summary in its own event file under `logdir`."""

    writer = tf.summary.create_file_writer(str(logdir))
    with writer.as_default():
        tf.summary.text(name, text, step=step)
    writer.close()


def write_pr_curves(
    name: str, y_true: np.ndarray, probabilities: np.ndarray, labels: Sequence[str], step: int
) -> None:
    """One precision-recall curve per class (one-vs-rest on the class's probability), as
    `<name>/<class>` in the PR Curves dashboard. Uses TensorBoard's own `pr_curve.summary.pb`."""

    y_true = np.asarray(y_true)
    for k, label in enumerate(labels):
        pb = pr_curve.pb(
            f"{name}/{label}",
            labels=y_true == k,
            predictions=np.clip(probabilities[:, k], 0.0, 1.0).astype(np.float32),
            num_thresholds=PR_THRESHOLDS,
            display_name=f"{name} {label}",
            description=f"class '{label}' against the rest",
        )
        tf.summary.experimental.write_raw_pb(pb.SerializeToString(), step=step)


def misclassified_texts(
    texts: Sequence[str],
    y_true: np.ndarray,
    probabilities: np.ndarray,
    labels: Sequence[str],
    limit: int = 25,
) -> str:
    """The most confident mistakes first, as a Markdown table of text, gold and predicted label."""
    predicted = probabilities.argmax(axis=-1)
    wrong = np.flatnonzero(predicted != np.asarray(y_true))
    wrong = wrong[np.argsort(-probabilities[wrong, predicted[wrong]], kind="stable")]
    rows = [
        [texts[i], labels[y_true[i]], labels[predicted[i]], f"{probabilities[i, predicted[i]]:.3f}"]
        for i in wrong[:limit]
    ]
    heading = f"{len(wrong)} of {len(y_true)} misclassified" + (
        f"; the {limit} most confident:" if len(wrong) > limit else ":"
    )
    return heading + "\n\n" + markdown_table(["text", "gold", "predicted", "probability"], rows)


def write_projector(
    logdir: Path, name: str, vectors: np.ndarray, metadata: dict[str, Sequence[str]]
) -> None:
    """An embedding for TensorBoard's projector in `logdir` (which should hold event files, so that
    TensorBoard sees it as a run): the vectors and their metadata as TSV files, and the projector
    config naming them. TSV rather than a checkpoint, so that TensorBoard reads it without TensorFlow.

    (Keras 3's TensorBoard callback cannot log embeddings: keras-team/keras#20210.)
    """

    logdir.mkdir(parents=True, exist_ok=True)
    slug = re.sub(r"\W+", "_", name).strip("_")
    np.savetxt(logdir / f"{slug}.tsv", np.asarray(vectors, np.float32), fmt="%.5g", delimiter="\t")
    columns = list(metadata)
    with open(logdir / f"{slug}_metadata.tsv", "w", encoding="utf-8") as f:
        if len(columns) > 1:  # the projector reads a header only when there are several columns
            f.write("\t".join(columns) + "\n")
        for values in zip(*metadata.values()):
            f.write("\t".join(re.sub(r"\s+", " ", str(v)).strip() or "-" for v in values) + "\n")
    config = projector.ProjectorConfig()
    embedding = config.embeddings.add()
    embedding.tensor_name = name
    embedding.tensor_path = f"{slug}.tsv"
    embedding.metadata_path = f"{slug}_metadata.tsv"
    embedding.tensor_shape.extend(np.shape(vectors))
    projector.visualize_embeddings(str(logdir), config)
