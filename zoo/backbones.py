"""Resolve a backbone spec to a KerasHub backbone and its matching preprocessor.

A spec is one of:
- a catalog name (`minilm-l6`, `efficientnet-lite0`, see `keras-zoo list`);
- a KerasHub preset name (`bert_base_en_uncased`);
- a hub handle (`hf://sentence-transformers/all-MiniLM-L6-v2`, `kaggle://keras/bert/keras/bert_base_en_uncased/2`);
- a local directory in KerasHub, Hugging Face transformers or timm format.

KerasHub's `from_preset` already reads all of these; this module adds the catalog, offline
fallbacks, format checks and errors that say what to do.

Example:
    >>> backbone, preprocessor = load_backbone("../shared/pretrained/minilm-l6-h384-uncased")
    >>> type(backbone).__name__, type(preprocessor).__name__
    ('BertBackbone', 'BertTextClassifierPreprocessor')
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from zoo.catalog import CATALOG, installed_dir, installed_for
from zoo.errors import UserError, closest

REMOTE_PREFIXES = ("hf://", "kaggle://", "gs://", "modelscope://")


@dataclass(frozen=True)
class ResolvedSpec:
    """Where a backbone spec points: the `from_preset` argument and what kind of source it is."""

    preset: str  # the argument for keras_hub `from_preset`
    source: str  # "catalog-offline", "catalog", "preset", "remote" or "local-<format>"


def local_format(directory: Path) -> str:
    """The checkpoint format of a local directory: 'keras', 'transformers' or 'timm'."""
    config_path = directory / "config.json"
    if not config_path.exists():
        raise UserError(
            f"{directory}: not a model directory (no config.json; expected a KerasHub, "
            "Hugging Face transformers or timm checkpoint)"
        )
    try:
        config = json.loads(config_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"{config_path}: not valid JSON ({e})") from None
    if (directory / "metadata.json").exists() and "class_name" in config:
        return "keras"
    if "model_type" in config:
        return "transformers"
    if "architecture" in config:
        return "timm"
    raise UserError(
        f"{config_path}: unknown checkpoint format (no 'class_name', 'model_type' or 'architecture' key)"
    )


def resolve_spec(spec: str) -> ResolvedSpec:
    """Turn a user's backbone spec into something `from_preset` can load, without loading it."""
    if spec in CATALOG:
        entry = CATALOG[spec]
        if model_dir := installed_dir(entry):
            return ResolvedSpec(str(model_dir), "catalog-offline")
        return ResolvedSpec(entry.preset, "catalog")
    if spec.startswith(REMOTE_PREFIXES):
        return ResolvedSpec(spec, "remote")
    path = Path(spec).expanduser()
    if path.is_dir():
        return ResolvedSpec(str(path), "local-" + local_format(path))
    if "/" in spec or spec.startswith("."):
        raise UserError(f"{spec}: no such model directory")
    import keras_hub  # heavy import, only when a preset name must be checked

    presets = keras_hub.models.Backbone.presets
    if spec in presets:
        return ResolvedSpec(spec, "preset")
    raise UserError(
        f"unknown backbone '{spec}'{closest(spec, list(CATALOG) + list(presets))}; "
        "run `keras-zoo list` for the catalog, or pass a local model directory"
    )


def load_backbone(
    spec: str, modality: str | None = None, task: str | None = None
) -> tuple[Any, Any]:
    """Load `(backbone, preprocessor)` for a spec: a text classifier preprocessor for text
    backbones (its `.tokenizer` is what recipes use), an image classifier preprocessor for
    image backbones (its `.image_converter` sets input size and normalisation).
    `modality` ("text" or "image") is what the caller needs; another kind of backbone is an error.
    `task` (the recipe's name) lets a failed download name the installed backbones to use instead."""
    import keras_hub

    resolved = resolve_spec(spec)
    try:
        backbone = keras_hub.models.Backbone.from_preset(resolved.preset)
        if isinstance(backbone.input, dict) and "token_ids" in backbone.input:
            preprocessor = keras_hub.models.TextClassifierPreprocessor.from_preset(resolved.preset)
        else:
            preprocessor = keras_hub.models.ImageClassifierPreprocessor.from_preset(resolved.preset)
    except (OSError, ValueError) as e:
        if resolved.source.startswith("local"):
            raise UserError(
                f"{resolved.preset}: could not load the model ({str(e).splitlines()[0]})"
            ) from None
        raise UserError(
            f"could not download backbone '{spec}' (preset {resolved.preset}): {type(e).__name__}. "
            f"{_offline_choices(task)}pass a local directory instead (a KerasHub preset saved with "
            "`backbone.save_to_preset(DIR)`, or a Hugging Face transformers / timm checkpoint folder), "
            "e.g. --set model.backbone=/path/to/model"
        ) from None
    found = "text" if getattr(preprocessor, "tokenizer", None) is not None else "image"
    if modality and found != modality:
        raise UserError(
            f"model.backbone: '{spec}' is {'an image' if found == 'image' else 'a text'} backbone; "
            f"this recipe needs {'an image' if modality == 'image' else 'a text'} one"
        )
    return backbone, preprocessor


def _offline_choices(task: str | None) -> str:
    """The start of the offline advice: the installed catalog backbones that suit `task` load without
    network, and the user may not know any is there."""
    if task is None:
        return "Without network access, "
    names = installed_for(task)
    if not names:
        return f"No catalog backbone for {task} is installed here: without network access, "
    return f"Without network access, use one installed here for {task}: {', '.join(names)}, or "
