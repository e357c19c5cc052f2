"""Read labelled images from class folders, `path,label` CSV files or TFDS, and decode them once.

Every reader returns `LabelledImages`: where each image's bytes are (a file, or the bytes
themselves for TFDS), its label, and its origin for error messages. `decode_images` then decodes
everything once, in parallel in tf.data, to fixed-size uint8 squares kept in memory; files that
do not decode are dropped there and reported, so training never meets a bad file mid-epoch.

Symlinks: a link at the top of the data folder to a folder outside it is a class named after the
link; one to the data folder itself, a folder above it (a loop) or a folder inside it (a class read
twice) is an error. Inside class folders, linked files are read but linked folders are not entered,
so a link loop there cannot make the file walk endless.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from recipes.common.labels import class_folders
from recipes.common.text_data import csv_records
from recipes.common.tfds_data import prepared_builder, split_for
from zoo.errors import UserError
from zoo.image_inputs import (
    IMAGE_EXTENSIONS,
    MAX_DECODED_PIXELS,
    decode_rgb,
    decoded_pixels,
    square_resize,
)
from zoo.progress import progress

SPLIT_FOLDERS = {"train": ["train"], "validation": ["validation", "val", "valid"], "test": ["test"]}


@dataclass
class LabelledImages:
    # image paths; empty when `encoded` holds the bytes
    files: list[str] = field(default_factory=list)
    labels: list[str | None] = field(default_factory=list)
    origins: list[str] = field(default_factory=list)  # the file, "csv:line" or "tfds:name/split[i]"
    encoded: list[bytes] = field(default_factory=list)  # TFDS images, still encoded

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, indices) -> LabelledImages:
        def pick(values):
            return [values[i] for i in indices] if values else []

        return LabelledImages(
            pick(self.files), pick(self.labels), pick(self.origins), pick(self.encoded)
        )


def split_folder(root: Path, split: str) -> Path | None:
    """`root/<split>` (or its usual aliases: val, valid) when `root` is laid out by split."""
    for name in SPLIT_FOLDERS[split]:
        if (root / name).is_dir():
            return root / name
    return None


def read_images(
    source: str, split: str, path_column: str = "path", label_column: str = "label"
) -> LabelledImages:
    """Read one split from a folder of class folders, a CSV of `path,label`, or `tfds:NAME`."""
    if source.startswith("tfds:"):
        return _read_tfds(source[5:], split)
    path = Path(source)
    if path.is_dir():
        return read_class_folders(split_folder(path, split) or path)
    if not path.exists():
        raise UserError(f"{path}: not found")
    if path.suffix.lower() != ".csv":
        raise UserError(
            f"{path}: expected a folder of class folders, a .csv of {path_column},{label_column}, "
            "or tfds:NAME"
        )
    return _read_csv(path, path_column, label_column)


def read_class_folders(root: Path) -> LabelledImages:
    """Every image under `root/<class>/` (sub-folders included), labelled with the class folder's name."""
    classes = class_folders(root)
    if not classes:
        raise UserError(f"{root}: no class folders (expected {root}/<label>/<image files>)")

    data = LabelledImages()
    for folder in classes:
        files = _image_files(folder)
        if not files:
            raise UserError(
                f"{folder}: empty class folder (no {', '.join(IMAGE_EXTENSIONS)} files)"
            )
        for file in files:
            data.files.append(str(file))
            data.labels.append(folder.name)
            data.origins.append(str(file))
    return data


def _image_files(folder: Path) -> list[Path]:
    """Image files under `folder`, sorted. Linked folders inside it are not entered (os.walk's default,
    as Path.rglob's before Python 3.13): a link loop would otherwise never end."""

    return sorted(
        Path(parent) / name
        for parent, _, names in os.walk(folder)
        for name in names
        if Path(name).suffix.lower() in IMAGE_EXTENSIONS and (Path(parent) / name).is_file()
    )


def list_image_files(paths: list[str]) -> list[str]:
    """Image files named directly, or found under folders (for predict)."""
    files = []
    for name in paths:
        # Path("") is the current folder: never what a user meant to predict on
        if not name.strip():
            raise UserError("predict: empty path")
        path = Path(name)
        if path.is_dir():
            files += sorted(str(p) for p in _image_files(path))
        elif path.is_file():
            files.append(str(path))
        else:
            raise UserError(f"{path}: not found")
    if not files:
        raise UserError(f"no image files in {', '.join(paths)}")
    return files


def _read_csv(path: Path, path_column: str, label_column: str) -> LabelledImages:

    records = csv_records(path, ",")
    header = [h.strip() for h in next(records, (1, []))[1]]
    for column in (path_column, label_column):
        if column not in header:
            raise UserError(
                f"{path}:1: no column '{column}' (columns: {', '.join(header) or 'none'}); "
                "set data.path_column / data.label_column"
            )
    data = LabelledImages()
    for line, row in records:
        if not row or not any(cell.strip() for cell in row):
            continue
        origin = f"{path}:{line}"
        if len(row) != len(header):
            raise UserError(
                f"{origin}: {len(row)} fields, expected {len(header)} ({', '.join(header)})"
            )
        values = dict(zip(header, (cell.strip() for cell in row)))
        file = (path.parent / values[path_column]).resolve()
        if not file.is_file():
            raise UserError(f"{origin}: image file not found: {file}")
        if not values[label_column]:
            raise UserError(f"{origin}: empty label")
        data.files.append(str(file))
        data.labels.append(values[label_column])
        data.origins.append(origin)
    if not data.labels:
        raise UserError(f"{path}: no examples (empty file)")
    return data


def _read_tfds(name: str, split: str) -> LabelledImages:

    builder = prepared_builder(name, "point data.train at a local folder of class folders instead")
    tfds_split = split_for(builder, name, split)
    features = builder.info.features
    image_key = next(k for k, f in features.items() if isinstance(f, tfds.features.Image))
    label_key = (
        "label"
        if "label" in features
        else next(k for k, f in features.items() if isinstance(f, tfds.features.ClassLabel))
    )
    names = features[label_key].names
    # Still encoded: the recipe decodes every image itself, the same way as files.
    dataset = builder.as_dataset(split=tfds_split, decoders={image_key: tfds.decode.SkipDecoding()})
    data = LabelledImages()
    examples = progress(tfds.as_numpy(dataset), desc=f"reading {name}", unit="example")
    for i, example in enumerate(examples):
        data.encoded.append(example[image_key])
        data.labels.append(names[int(example[label_key])])
        data.origins.append(f"tfds:{name}/{tfds_split}[{i}]")
    return data


@dataclass
class DecodedImages:
    """The images that decode, with their labels, as uint8 `side` x `side` centre squares: held in
    memory (`pixels`), or, past the memory budget, decoded again from `sources` each time."""

    labels: list[str | None]
    origins: list[str]
    undecodable: list[str]  # origins of the files that did not decode, dropped
    side: int
    interpolation: str
    pixels: np.ndarray | None = None  # [N, side, side, 3] uint8, when in memory
    # origin: why, of the undecodable ones past the pixel limit
    too_large: dict[str, str] = field(default_factory=dict)
    sources: LabelledImages | None = None  # the decodable images, when not in memory

    def __len__(self) -> int:
        return len(self.labels)

    def dataset(self, targets: np.ndarray | None = None, shuffle_seed: int | None = None):
        """A tf.data dataset of the squares (with `targets` per image when given), in order unless
        shuffled; decoding, when not in memory, runs after the shuffle, in parallel."""

        if self.pixels is not None:
            items = self.pixels if targets is None else (self.pixels, targets)
            ds = tf.data.Dataset.from_tensor_slices(items)
            return ds.shuffle(len(self), seed=shuffle_seed) if shuffle_seed is not None else ds
        encoded = self.sources.encoded or self.sources.files
        items = encoded if targets is None else (encoded, targets)
        ds = tf.data.Dataset.from_tensor_slices(items)
        if shuffle_seed is not None:
            ds = ds.shuffle(len(self), seed=shuffle_seed)
        square = _square_fn(bool(self.sources.encoded), self.side, self.interpolation)
        if targets is None:
            return ds.map(square, num_parallel_calls=tf.data.AUTOTUNE)
        return ds.map(lambda x, t: (square(x), t), num_parallel_calls=tf.data.AUTOTUNE)

    def take(self, indices) -> np.ndarray:
        """The squares of a few images, as a uint8 array."""
        if self.pixels is not None:
            return self.pixels[np.asarray(indices, int)]
        return np.stack(
            [
                s
                for s in DecodedImages(
                    [None] * len(indices),
                    [],
                    [],
                    self.side,
                    self.interpolation,
                    sources=self.sources.subset(list(indices)),
                )
                .dataset()
                .as_numpy_iterator()
            ]
        )


def _square_fn(encoded: bool, side: int, interpolation: str):

    read = (lambda x: x) if encoded else tf.io.read_file
    return lambda x: square_resize(decode_rgb(read(x), side), side, interpolation)


def check_decoded(
    decoded: DecodedImages, files_tried: int, split: str, source: str, labels: list[str]
) -> None:
    """A one-line error when no image of a split decodes, or a class has no decodable training image."""
    missing = sorted(set(labels) - set(decoded.labels))
    if split == "train" and missing:
        raise UserError(f"{source}: class {', '.join(missing)} has no decodable training images")
    if not len(decoded):
        raise UserError(f"{source}: no {split} image decodes ({files_tried} files tried)")


def skipped_files(splits: list[DecodedImages | None]) -> tuple[list[str], str]:
    """The files of the decoded splits that were skipped, and the note that says so ("" for none),
    with why for the first few skipped as too large."""
    undecodable = [o for d in splits if d for o in d.undecodable]
    large = [f"{o}: {why}" for d in splits if d for o, why in d.too_large.items()]
    note = (
        (
            f"skipped {len(undecodable)} files that do not decode as images (listed in undecodable.txt)"
            + "".join(f"; {line}" for line in large[:3])
        )
        if undecodable
        else ""
    )
    return undecodable, note


def _over_pixel_limit(data: LabelledImages, side: int) -> dict[str, str]:
    """`{origin: why}` of the images that would decode past `MAX_DECODED_PIXELS`, from their headers."""

    found = {}
    for i, origin in enumerate(data.origins):
        if data.encoded:
            head = data.encoded[i][:HEADER_BYTES]
        else:
            try:
                with open(data.files[i], "rb") as f:
                    head = f.read(HEADER_BYTES)
            except OSError:
                continue  # the decode pass lists it as undecodable
        pixels = decoded_pixels(head, side)
        if pixels is not None and pixels > MAX_DECODED_PIXELS:
            found[origin] = (
                f"{pixels / 1e6:.0f} M pixels to decode, over the limit of "
                f"{MAX_DECODED_PIXELS / 1e6:.0f} M (zoo.image_inputs.MAX_DECODED_PIXELS)"
            )
    return found


HEADER_BYTES = 1 << 16  # enough to reach a JPEG's frame header past its EXIF block


def decode_images(
    data: LabelledImages, side: int, interpolation: str = "bilinear", max_bytes: float = 4 * 2**30
) -> DecodedImages:
    """Decode every image once (parallel, in tf.data) to a `side` x `side` centre square, kept in
    memory when they fit in `max_bytes`.

    Images that fail to decode (truncated, not an image) are dropped and listed in `undecodable`:
    this pass finds them, so that training never meets one mid-epoch. So are images that would
    decode to more than `MAX_DECODED_PIXELS` (JPEGs are decoded at reduced scale first), with the
    reason in `too_large`, before anything is decoded.
    """

    too_large = _over_pixel_limit(data, side)
    if too_large:
        keep = [i for i, origin in enumerate(data.origins) if origin not in too_large]
        result = (
            decode_images(data.subset(keep), side, interpolation, max_bytes)
            if keep
            else DecodedImages(
                [], [], [], side, interpolation, pixels=np.empty((0, side, side, 3), np.uint8)
            )
        )
        result.undecodable += list(too_large)
        result.too_large = too_large
        return result
    in_memory = len(data) * side * side * 3 <= max_bytes
    square = _square_fn(bool(data.encoded), side, interpolation)
    source = tf.data.Dataset.from_tensor_slices(data.encoded or data.files)
    ds = tf.data.Dataset.zip(tf.data.Dataset.range(len(data)), source)
    ds = ds.map(
        lambda i, x: (i, square(x)), num_parallel_calls=tf.data.AUTOTUNE, deterministic=True
    )
    ds = ds.ignore_errors().batch(64).prefetch(2)  # a failed decode drops that image only
    pixels = np.empty((len(data), side, side, 3), np.uint8) if in_memory else None
    ok = np.zeros(len(data), bool)
    for index, batch in progress(
        ds.as_numpy_iterator(), total=-(-len(data) // 64), desc="decoding images"
    ):
        if in_memory:
            pixels[index] = batch
        ok[index] = True
    kept = np.flatnonzero(ok)
    result = DecodedImages(
        [data.labels[i] for i in kept],
        [data.origins[i] for i in kept],
        [data.origins[i] for i in np.flatnonzero(~ok)],
        side,
        interpolation,
    )
    if in_memory:
        result.pixels = pixels if ok.all() else pixels[kept]
    else:
        result.sources = data.subset(kept)
    return result
