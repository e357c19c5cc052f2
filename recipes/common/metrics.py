"""Classification metrics from predictions, and their TensorBoard pictures.

Computed once per evaluation (not per step) by scikit-learn, so they cost nothing during training.
"""

from __future__ import annotations

import io
from collections.abc import Sequence

import numpy as np
from matplotlib.figure import Figure
from sklearn.metrics import (
    accuracy_score,
    confusion_matrix,
    precision_recall_fscore_support,
    top_k_accuracy_score,
)


def classification_report(y_true: np.ndarray, y_pred: np.ndarray, labels: Sequence[str]) -> dict:
    """Accuracy, macro-F1, per-class precision/recall/F1/support and the confusion matrix
    (rows: true label, columns: predicted), as plain JSON-ready values. A class never predicted or
    never true scores 0, and counts in the macro-F1 like every other class."""

    y_true, y_pred, ids = np.asarray(y_true), np.asarray(y_pred), np.arange(len(labels))
    if len(y_true):
        cm = confusion_matrix(y_true, y_pred, labels=ids)
        precision, recall, f1, support = precision_recall_fscore_support(
            y_true, y_pred, labels=ids, average=None, zero_division=0
        )
        accuracy = float(accuracy_score(y_true, y_pred))
    else:  # scikit-learn refuses empty input; nothing to evaluate scores 0
        cm = np.zeros((len(labels), len(labels)), np.int64)
        precision = recall = f1 = np.zeros(len(labels))
        support, accuracy = np.zeros(len(labels), np.int64), 0.0
    return {
        "accuracy": accuracy,
        "macro_f1": float(f1.mean()) if len(labels) else 0.0,
        "num_examples": int(cm.sum()),
        "per_class": {
            str(name): {
                "precision": float(p),
                "recall": float(r),
                "f1": float(f),
                "support": int(s),
            }
            for name, p, r, f, s in zip(labels, precision, recall, f1, support)
        },
        "confusion_matrix": cm.tolist(),
        "labels": [str(name) for name in labels],
    }


def format_report(report: dict) -> str:
    """The per-class table as Markdown (readable in a terminal and in TensorBoard's text tab)."""
    lines = ["| class | precision | recall | f1 | support |", "|---|---|---|---|---|"]
    for name, m in report["per_class"].items():
        lines.append(
            f"| {name} | {m['precision']:.4f} | {m['recall']:.4f} | {m['f1']:.4f} | {m['support']} |"
        )
    lines.append(
        f"\naccuracy {report['accuracy']:.4f}, macro-F1 {report['macro_f1']:.4f}, "
        f"{report['num_examples']} examples"
    )
    return "\n".join(lines)


def confusion_matrix_png(cm: Sequence[Sequence[int]], labels: Sequence[str]) -> bytes:
    """The confusion matrix drawn as a PNG (counts in the cells, row-normalised colours)."""

    cm = np.asarray(cm)
    norm = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    size = 2 + 0.6 * len(labels)
    fig = Figure(figsize=(size, size), dpi=100)
    ax = fig.subplots()
    ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set(xticks=range(len(labels)), yticks=range(len(labels)), xlabel="predicted", ylabel="true")
    ax.set_xticklabels(labels, rotation=45, ha="right")
    ax.set_yticklabels(labels)
    for i in range(len(labels)):
        for j in range(len(labels)):
            ax.text(
                j,
                i,
                str(cm[i, j]),
                ha="center",
                va="center",
                color="white" if norm[i, j] > 0.5 else "black",
            )
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def top_k_accuracy(y_true: np.ndarray, probabilities: np.ndarray, k: int) -> float:
    """Share of examples whose true class is among the `k` most probable (`probabilities`: [N, classes])."""

    probabilities = np.asarray(probabilities)
    num_classes = probabilities.shape[-1]
    # every class is in the top k (scikit-learn warns that this is meaningless)
    if k >= num_classes:
        return 1.0
    # With two classes scikit-learn takes the scores of the second class only.
    scores = probabilities[:, 1] if num_classes == 2 else probabilities
    return float(top_k_accuracy_score(y_true, scores, k=k, labels=np.arange(num_classes)))


def image_grid_png(images: np.ndarray, captions: Sequence[str], columns: int = 4) -> bytes:
    """Images (uint8 `[N, H, W, 3]`) in a grid with a caption over each, as a PNG."""

    n = max(len(images), 1)
    rows = (n + columns - 1) // columns
    fig = Figure(figsize=(2.6 * columns, 2.9 * rows), dpi=80)
    axes = fig.subplots(rows, columns, squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i < len(images):
            ax.imshow(images[i])
            ax.set_title(captions[i], fontsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def misclassified_grid_png(
    images: np.ndarray, y_true: Sequence[int], probabilities: np.ndarray, labels: Sequence[str]
) -> bytes:
    """`image_grid_png` of misclassified images (uint8 crops), each captioned with its true and
    predicted class and the predicted class's probability."""
    predicted = np.asarray(probabilities).argmax(axis=-1)
    return image_grid_png(
        images,
        [
            f"true {labels[t]}\npred {labels[p]} {probabilities[i, p]:.2f}"
            for i, (t, p) in enumerate(zip(y_true, predicted))
        ],
    )
