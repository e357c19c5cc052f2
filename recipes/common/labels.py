"""Class labels shared by the classification recipes: their order, their ids, stratified splits,
class weights.

Works on any labelled collection with `labels`, `origins` and `subset(indices)` (texts, images).
"""

from __future__ import annotations

import hashlib
import random
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol, TypeVar

import numpy as np
from sklearn.model_selection import train_test_split
from sklearn.utils.class_weight import compute_class_weight

from zoo.errors import UserError


class Labelled(Protocol):
    labels: list
    origins: list[str]

    def __len__(self) -> int: ...

    def subset(self, indices: Sequence[int]): ...


L = TypeVar("L", bound=Labelled)


def label_order(values) -> list[str]:
    """Class names sorted, integer-like names numerically (so "2" < "10")."""
    return sorted(
        set(values), key=lambda v: (0, int(v), "") if v.lstrip("-").isdigit() else (1, 0, v)
    )


def label_ids(data: Labelled, labels: list[str]) -> np.ndarray:
    """Class ids of every example; a label the model does not know is an error naming its origin."""
    index = {name: i for i, name in enumerate(labels)}
    ids = []
    for value, origin in zip(data.labels, data.origins):
        if value not in index:
            raise UserError(
                f"{origin}: label '{value}' was never seen in training (labels: {', '.join(labels)})"
            )
        ids.append(index[value])
    return np.asarray(ids, np.int32)


def stratified_split(
    data: L, fraction: float, seed: int, key: str = "data.validation_split"
) -> tuple[L, L]:
    """`(rest, held_out)`: `fraction` of every class held out, chosen with `seed` (scikit-learn's
    stratified split); both keep the examples' original order. `key` is the setting errors name."""

    instead = "give data.validation" if key == "data.validation_split" else f"set {key}=0"
    if not 0 < fraction < 1:
        raise UserError(f"{key} must be between 0 and 1, not {fraction}")
    names, counts = np.unique(np.asarray(data.labels), return_counts=True)
    # scikit-learn's own errors here name neither the class nor the setting: say both.
    for name, count in zip(names, counts):
        if count < 2:
            raise UserError(
                f"{key}: class '{name}' has {count} example, too few to hold some out "
                f"(at least 2 per class); add examples or {instead}"
            )
    try:
        _, held = train_test_split(
            np.arange(len(data)), test_size=fraction, stratify=data.labels, random_state=seed
        )
    except ValueError:  # too few examples held out, or left, to have one of every class
        smallest = names[np.argmin(counts)]
        raise UserError(
            f"{key}={fraction}: {len(data)} examples cannot be split with every one of "
            f"the {len(names)} classes on both sides (class '{smallest}' has {counts.min()}); "
            f"change the fraction or {instead}"
        ) from None
    held = np.sort(held)
    rest = np.setdiff1d(np.arange(len(data)), held)  # sorted: the original order
    return data.subset(rest.tolist()), data.subset(held.tolist())


def balanced_class_weights(y: np.ndarray, num_classes: int, mode: str) -> dict[int, float] | None:
    """`{class id: n / (k * count)}` (scikit-learn's "balanced" weights) for mode `balanced`, or for
    `auto` when the largest class has more than 1.5x the examples of the smallest; None otherwise."""

    counts = np.bincount(y, minlength=num_classes)
    if mode == "none" or (mode == "auto" and counts.max() <= 1.5 * counts.min()):
        return None
    if counts.min() == 0:  # no weight balances a class with no examples
        missing = ", ".join(str(i) for i in np.flatnonzero(counts == 0))
        raise UserError(f"train.class_weights={mode}: class id {missing} has no training examples")
    weights = compute_class_weight("balanced", classes=np.arange(num_classes), y=y)
    return {i: float(w) for i, w in enumerate(weights)}


def sample_per_class(data: L, per_class: int, seed: int) -> L:
    """`per_class` examples of every class, drawn as SetFit's few-shot benchmarks draw them (and
    ../shared/bench/peer_fewshot_setfit.py): one `random.Random(seed)`; the classes in `label_order`
    (integer labels numerically, as the peer sorts its integers); for each class,
    `rng.sample(its examples' indices in file order, per_class)`. The sample keeps that order."""
    by_class: dict[str, list[int]] = {}
    for i, label in enumerate(data.labels):
        by_class.setdefault(label, []).append(i)
    if len(by_class) < 2:
        raise UserError(
            f"data.examples_per_class: {split_origin(data)} has {len(by_class)} class "
            f"({', '.join(map(str, by_class)) or 'none'}); a classifier needs at least two"
        )
    rng = random.Random(seed)
    chosen = []
    for label in label_order(by_class):
        indices = by_class[label]
        if len(indices) < per_class:
            raise UserError(
                f"data.examples_per_class={per_class}: class '{label}' has only {len(indices)} "
                f"examples in {split_origin(data)}; lower it to at most {len(indices)}"
            )
        chosen += rng.sample(indices, per_class)
    return data.subset(chosen)


def sample_record(data: Labelled, per_class: int, seed: int) -> dict:
    """What data.json says of a drawn sample: N, the seed and the SHA-256 of its rows in order
    (each `origin<TAB>label`, a line), so two runs can show they trained on the same examples."""
    rows = "".join(f"{o}\t{label}\n" for o, label in zip(data.origins, data.labels))
    return {
        "examples_per_class": per_class,
        "sample_seed": seed,
        "sample_sha256": hashlib.sha256(rows.encode()).hexdigest(),
    }


def split_origin(data: Labelled) -> str:
    """The file or folder a split was read from (its first example's origin, less the line)."""
    return re.sub(r"(:\d+|\[\d+\])$", "", str(data.origins[0])) if len(data) else "the data"


def read_class_splits(
    read,
    train: str,
    validation: str,
    test: str,
    validation_split: float,
    seed: int,
    selection_split: float = 0.0,
    examples_per_class: int = 0,
    sample_seed: int = 0,
) -> tuple[L, L | None, L | None, list[str], L | None]:
    """`(train, validation, test, class names, selection)` of a classification data set: each split
    read with `read(source, split)`; without a validation source, a stratified `validation_split`
    of train; test None without a source; the class names checked across the splits (`class_names`).

    With `selection_split`, a stratified share of the training examples left is held out as the
    selection split, on which the best epoch is chosen, so that the reported validation figures
    come from data that neither trained the model nor chose its epoch (else None).

    With `examples_per_class` (few-shot), train is that sample of the training file
    (`sample_per_class`, drawn with `sample_seed`), and nothing is carved from it: validation is
    the validation source's, or None."""
    train_data = read(train, "train")
    if examples_per_class:
        if selection_split:
            raise UserError(
                "data.selection_split: nothing is held out of a data.examples_per_class sample; "
                "set data.selection_split=0 (the run keeps its last epoch)"
            )
        train_data = sample_per_class(train_data, examples_per_class, sample_seed)
    if validation:
        validation_data = read(validation, "validation")
    elif examples_per_class:
        validation_data = None
    else:
        train_data, validation_data = stratified_split(train_data, validation_split, seed)
    selection_data = None
    if selection_split:
        train_data, selection_data = stratified_split(
            train_data, selection_split, seed, "data.selection_split"
        )
    test_data = read(test, "test") if test else None
    return (
        train_data,
        validation_data,
        test_data,
        class_names(train, train_data, validation_data, test_data, selection_data),
        selection_data,
    )


def class_names(source: str, train: Labelled, *others: Labelled | None) -> list[str]:
    """The classes of `train` (see `label_order`): at least two, and every label of the `others`
    splits among them (a label training never saw is an error naming its file and line)."""
    labels = label_order(train.labels)
    if len(labels) < 2:
        raise UserError(f"{source}: needs at least two classes, found {labels}")
    for split in others:
        if split is not None:
            label_ids(split, labels)
    return labels


def class_folders(root: Path) -> list[Path]:
    """The class folders at the top of a data folder, sorted: hidden folders (.ipynb_checkpoints,
    ...) are not classes, and a symlink counts only when it points at a folder outside `root`."""
    return sorted(
        p for p in root.iterdir() if not p.name.startswith(".") and _is_class_folder(root, p)
    )


def _is_class_folder(root: Path, entry: Path) -> bool:
    """Whether `entry`, at the top of `root`, is a class folder; a symlink counts only when it points
    at a folder outside `root`: at `root` or above it is a loop, inside it a class read twice."""
    if not entry.is_symlink():
        return entry.is_dir()
    target, top = entry.resolve(), root.resolve()
    if not target.is_dir():
        return False  # a link to a file, or a broken link: not a class, as a plain file is not
    if target == top or target in top.parents:
        raise UserError(
            f"{entry}: symlink to {target}, the data folder or a folder above it (a loop); remove the link"
        )
    if top in target.parents:
        raise UserError(
            f"{entry}: symlink to {target}, a folder inside the data folder (its images would be "
            "read twice); remove the link"
        )
    return True
