"""A fine-tuned model as a KerasHub preset directory, to share the way KerasHub models are shared
(`keras_hub.upload_preset("kaggle://...", DIR)` or `"hf://..."`).

The directory is KerasHub's format, plus the task head, which KerasHub has no class for (mean
pooling, token classification):

    config.json, metadata.json, model.weights.h5   the fine-tuned backbone: `Backbone.from_preset(DIR)`
    tokenizer.json, assets/tokenizer/              its tokenizer: `Tokenizer.from_preset(DIR)` (text)
    image_converter.json                           its input resizing and normalisation (images):
                                                   `ImageConverter.from_preset(DIR)`
    keras_zoo_task.json                            the whole model's Keras config (backbone inside) and
                                                   what the recipe needs (recipe, labels, lengths)
    keras_zoo_task.weights.h5                      the weights outside the backbone (the head)

`load_task_model(DIR)` rebuilds the whole model from the last two and the backbone's weights, so
no weight is stored twice. The recipes' `engine.load_preset(DIR)` adds labels and preprocessing.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import h5py
import keras
import keras_hub

TASK_CONFIG = "keras_zoo_task.json"
TASK_WEIGHTS = "keras_zoo_task.weights.h5"
BACKBONE_WEIGHTS = (
    "model.weights.h5"  # KerasHub's name (keras_hub.src.utils.preset_utils.MODEL_WEIGHTS_FILE)
)


def find_backbone(model) -> Any:
    """The KerasHub backbone inside a keras-zoo task model (each has exactly one)."""

    found = [layer for layer in model.layers if isinstance(layer, keras_hub.models.Backbone)]
    if len(found) != 1:
        raise ValueError(f"{model.name}: expected one KerasHub backbone inside, found {len(found)}")
    return found[0]


def head_variables(model) -> list:
    """The model's variables that are not the backbone's: the task head."""
    backbone = {id(v) for v in find_backbone(model).weights}
    return [v for v in model.weights if id(v) not in backbone]


def save_task_preset(
    model, directory: Path, task: dict, preprocessing: Sequence[Path] = ()
) -> None:
    """Write `model` (a task model around one KerasHub backbone) into `directory` as described
    above; `task` is what loading it needs beside the model (JSON). `preprocessing`: folders that
    KerasHub preprocessing was saved into with `save_to_preset` (a run's `tokenizer/`,
    `image_converter/`); their files go to the preset's top level, where KerasHub looks."""

    directory = Path(directory)
    find_backbone(model).save_to_preset(str(directory))
    for folder in preprocessing:
        if Path(folder).is_dir():
            shutil.copytree(folder, directory, dirs_exist_ok=True)
    with h5py.File(directory / TASK_WEIGHTS, "w") as f:
        for variable in head_variables(model):
            f[variable.path] = keras.ops.convert_to_numpy(variable.value)
    record = {**task, "model": keras.saving.serialize_keras_object(model)}
    (directory / TASK_CONFIG).write_text(json.dumps(record, indent=2) + "\n")
    meta_path = directory / "metadata.json"
    meta = json.loads(meta_path.read_text())
    meta["keras_zoo_version"] = metadata.version("keras-zoo")
    meta_path.write_text(json.dumps(meta, indent=4) + "\n")


def read_task_record(directory: Path) -> dict:
    """`keras_zoo_task.json` without the model config."""
    record = json.loads((Path(directory) / TASK_CONFIG).read_text())
    record.pop("model", None)
    return record


def load_task_model(directory: Path):
    """The whole task model of a preset written by `save_task_preset`."""

    directory = Path(directory)
    record = json.loads((directory / TASK_CONFIG).read_text())
    model = keras.saving.deserialize_keras_object(record["model"])
    find_backbone(model).load_weights(str(directory / BACKBONE_WEIGHTS))
    with h5py.File(directory / TASK_WEIGHTS, "r") as f:
        head = head_variables(model)
        missing = [v.path for v in head if v.path not in f]
        if missing:
            raise ValueError(f"{directory / TASK_WEIGHTS}: no weights for {', '.join(missing)}")
        for variable in head:
            variable.assign(f[variable.path][()])
    return model
