"""TFDS data sets for the recipes' readers: the builder, prepared, and the split a role maps to."""

from __future__ import annotations

import tensorflow_datasets as tfds

from zoo.errors import UserError

# A role's split names in order of preference: GLUE-style sets validate on "validation", others on "test".
ROLE_SPLITS = {"train": ["train"], "validation": ["validation", "test"], "test": ["test"]}


def prepared_builder(name: str, offline_hint: str):
    """`tfds.builder(name)` with its data downloaded and prepared; failures are one-line errors."""

    try:
        builder = tfds.builder(name)
        builder.download_and_prepare()
    except Exception as e:  # noqa: BLE001 (tfds raises many types for a missing dataset or network)
        raise UserError(
            f"tfds:{name}: could not load ({type(e).__name__}: {str(e).splitlines()[0][:160]}); "
            f"offline, {offline_hint}"
        ) from None
    return builder


def split_for(builder, name: str, role: str) -> str:
    """The builder's split that serves as `role` (train, validation, test)."""
    known = builder.info.splits
    if not known:  # no split metadata: just try the role's first name
        return ROLE_SPLITS[role][0]
    for split in ROLE_SPLITS[role]:
        if split in known:
            return split
    raise UserError(f"tfds:{name}: no '{role}' split (splits: {', '.join(known)})")
