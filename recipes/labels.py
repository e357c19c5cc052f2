"""Class labels shared by the classification recipes: their order, their ids, stratified splits.

Works on any labelled collection with `labels`, `origins` and `subset(indices)` (texts, images).
"""

from __future__ import annotations

from typing import Protocol, Sequence, TypeVar

import numpy as np

from zoo.errors import UserError


class Labelled(Protocol):
    labels: list
    origins: list[str]

    def __len__(self) -> int: ...

    def subset(self, indices: Sequence[int]): ...


L = TypeVar("L", bound=Labelled)


def label_order(values) -> list[str]:
    """Class names sorted, integer-like names numerically (so "2" < "10")."""
    return sorted(set(values), key=lambda v: (0, int(v), "") if v.lstrip("-").isdigit() else (1, 0, v))


def label_ids(data: Labelled, labels: list[str]) -> np.ndarray:
    """Class ids of every example; a label the model does not know is an error naming its origin."""
    index = {name: i for i, name in enumerate(labels)}
    ids = []
    for value, origin in zip(data.labels, data.origins):
        if value not in index:
            raise UserError(f"{origin}: label '{value}' was never seen in training (labels: {', '.join(labels)})")
        ids.append(index[value])
    return np.asarray(ids, np.int32)


def stratified_split(data: L, fraction: float, seed: int) -> tuple[L, L]:
    """`(rest, held_out)`: `fraction` of every class held out, chosen with `seed`."""
    if not 0 < fraction < 1:
        raise UserError(f"data.validation_split must be between 0 and 1, not {fraction}")
    rng = np.random.default_rng(seed)
    labels = np.asarray(data.labels)
    held_out = []
    for name in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == name))
        held_out.extend(members[: int(round(fraction * len(members)))])
    held = set(int(i) for i in held_out)
    keep = [i for i in range(len(data)) if i not in held]
    return data.subset(keep), data.subset(sorted(held))
