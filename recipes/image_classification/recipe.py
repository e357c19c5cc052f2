"""Image classification by transfer learning from a pretrained CNN or ViT backbone.

The story of a run: load the backbone (its image converter fixes input size and normalisation),
read the images and decode them once into memory (files that do not decode are listed and
skipped), train the new head on the frozen backbone, then fine-tune the backbone at a lower
learning rate with BatchNorm frozen, evaluate, export (SavedModel on image bytes, TFLite).

    keras-zoo train image_classification --set data.train=photos/        # photos/<label>/*.jpg
    keras-zoo train image_classification --set data.train=hymenoptera/ \\
        --set model.backbone=../shared/pretrained/efficientnet-lite0-imagenet
    keras-zoo predict image_classification runs/image_classification/NAME photo.jpg more_photos/

From Python:

    >>> from recipes import engine, image_classification as ic
    >>> cfg = ic.RECIPE.load_config(overrides=["data.train=photos/"])  # doctest: +SKIP
    >>> run, report = engine.train(ic.RECIPE, cfg)  # doctest: +SKIP
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Literal

import keras
import numpy as np

from recipes.common.labels import balanced_class_weights, label_ids, read_class_splits
from recipes.common.metrics import (
    classification_report,
    confusion_matrix_png,
    format_report,
    misclassified_grid_png,
    top_k_accuracy,
)
from recipes.engine import training
from recipes.engine.config import ModelConfig, RunConfig, TrainConfig, TuningConfig
from recipes.engine.contract import Evaluation, Phase, Recipe, Training
from recipes.image_classification.images import (
    DecodedImages,
    LabelledImages,
    check_decoded,
    decode_images,
    list_image_files,
    read_images,
    skipped_files,
    split_folder,
)
from zoo.backbones import load_backbone
from zoo.errors import UserError
from zoo.export import export_image_classifier, export_tflite
from zoo.heads import image_classifier, unfreeze_top
from zoo.image_inputs import (
    augmented_batches,
    center_crop,
    cropped_batches,
    feature_batches,
    input_size,
    model_outputs,
    predict_probabilities,
    save_run_assets,
)


@dataclass
class ImageDataConfig:
    LIMITS: ClassVar[dict[str, str]] = {
        "validation_split": "(0, 1)",
        "selection_split": "[0, 1)",
        "crop_fraction": "(0, 1]",
        "cache_max_gb": ">= 0",
    }

    train: str = ""  # a folder of class folders (or of train/ validation/ test/ folders), a CSV, or tfds:NAME
    licence: str = ""  # the data's licence, for the model card ("": not stated)
    validation: str = ""  # empty: the train folder's validation/ (or val/) folder, else `validation_split` of train
    test: str = ""  # empty: the train folder's test/ folder, if any
    path_column: str = "path"  # CSV columns
    label_column: str = "label"
    validation_split: float = 0.2
    selection_split: float = (
        0.0  # > 0: this share of train (stratified) chooses the epoch, not validation
    )
    crop_fraction: float = (
        0.875  # evaluation crops the centre 87.5% of the resized square (224 of 256)
    )
    cache_max_gb: float = (
        4.0  # decoded squares are kept in memory up to this size, else decoded each epoch
    )


@dataclass
class AugmentConfig:
    LIMITS: ClassVar[dict[str, str]] = {
        "rotation": ">= 0",
        "zoom": ">= 0",
        "mixup": ">= 0",
        "cutmix": ">= 0",
    }

    # random resized crop: area range
    crop_scale: list[float] = field(default_factory=lambda: [0.25, 1.0])
    flip: bool = True  # horizontal
    rotation: float = 0.0  # Keras RandomRotation factor (fraction of a full turn); 0: off
    zoom: float = 0.0  # Keras RandomZoom factor; 0: off
    rand_augment: bool = False
    mixup: float = 0.0  # Keras MixUp alpha; 0: off
    cutmix: float = 0.0  # Keras CutMix factor; 0: off (with both on, each batch gets one of them)

    def __post_init__(self):  # a pair, which LIMITS cannot say: checked when the config is loaded
        if len(self.crop_scale) != 2 or not 0 < self.crop_scale[0] <= self.crop_scale[1] <= 1:
            raise UserError(
                f"augment.crop_scale: must be [low, high] with 0 < low <= high <= 1, not {self.crop_scale}"
            )


@dataclass
class ImageModelConfig(ModelConfig):
    LIMITS: ClassVar[dict[str, str]] = {"unfreeze_blocks": ">= 0"}

    backbone: str = "efficientnet-lite0"
    # full: head first, then the backbone; frozen: head only (no lora: that is for transformer text backbones)
    finetune: Literal["full", "frozen"] = "full"
    dropout: float = 0.2
    unfreeze_blocks: int = 0  # fine-tune only the top N blocks of the backbone; 0: all of it
    train_batchnorm: bool = (
        False  # False: BatchNorm keeps its pretrained statistics while fine-tuning
    )


@dataclass
class ImageTrainConfig(TrainConfig):
    # Either phase may be skipped (0 epochs); the engine refuses a run where both are.
    LIMITS: ClassVar[dict[str, str]] = {
        "epochs": ">= 0",
        "head_epochs": ">= 0",
        "frozen_epochs": ">= 1",
        "head_learning_rate": "> 0",
        "label_smoothing": "[0, 1)",
        "top_k": ">= 1",
    }

    head_epochs: int = 4  # phase 1 of finetune: full: the new head on the frozen backbone
    frozen_epochs: int = (
        30  # finetune: frozen: the head alone trains, to convergence (4 epochs under-fit)
    )
    frozen_augment: bool = (
        False  # finetune: frozen: false: centre crops, no label smoothing (measured best)
    )
    head_learning_rate: float = 1e-3
    epochs: int = 8  # phase 2: fine-tuning the backbone
    learning_rate: float = 1e-4
    weight_decay: float = 0.05
    clipnorm: float = 1.0  # cheap here (no embedding matrix)
    warmup_ratio: float = 0.1
    label_smoothing: float = 0.1
    class_weights: Literal["auto", "balanced", "none"] = (
        "auto"  # auto: balanced when classes differ by > 1.5x
    )
    top_k: int = 5  # top-k accuracy is reported when there are more than k classes
    early_stopping_patience: int = 0
    # precision auto: float32 on CPUs even with native bf16 (EfficientNet's depthwise convolutions
    # trained 2.3x *slower* in bf16 on an AMX CPU: 12.2 vs 5.3 s per batch, measured)
    CPU_BF16: ClassVar[bool] = False


@dataclass
class ImageClassificationConfig:
    data: ImageDataConfig = field(default_factory=ImageDataConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    model: ImageModelConfig = field(default_factory=ImageModelConfig)
    train: ImageTrainConfig = field(default_factory=ImageTrainConfig)
    run: RunConfig = field(default_factory=RunConfig)
    # Whether training uses `augment` and label smoothing: when fine-tuning, or when asked for a frozen head
    augmented = property(lambda self: self.model.finetune == "full" or self.train.frozen_augment)

    tuning: TuningConfig = field(
        default_factory=lambda: TuningConfig(
            objective="val_accuracy",
            space={
                "train.head_learning_rate": {"min": 3e-4, "max": 3e-3, "sampling": "log"},
                "train.learning_rate": {"min": 1e-5, "max": 3e-4, "sampling": "log"},
                "model.dropout": {"min": 0.0, "max": 0.4},
                "model.unfreeze_blocks": [0, 2, 4],
                "train.label_smoothing": [0.0, 0.1],
                "augment.mixup": [0.0, 0.2],
            },
        )
    )


def training_phases(
    cfg: ImageClassificationConfig, backbone, steps_per_epoch: int, num_classes: int
) -> list:
    """Phase 1 trains the head on the frozen backbone; phase 2 (finetune: full) unfreezes the
    backbone (or its top blocks) at the lower fine-tuning learning rate. finetune: frozen trains
    the head alone, for `frozen_epochs`."""

    t = cfg.train
    smoothing = t.label_smoothing if cfg.augmented else 0.0

    def compiled(model, learning_rate: float, epochs: int) -> None:
        metrics = [
            keras.metrics.CategoricalAccuracy(name="accuracy"),
            keras.metrics.F1Score(average="macro", name="macro_f1"),
        ]
        if num_classes > t.top_k:
            metrics.append(
                keras.metrics.TopKCategoricalAccuracy(t.top_k, name=f"top{t.top_k}_accuracy")
            )
        model.compile(
            optimizer=training.make_optimizer(t, steps_per_epoch, learning_rate, epochs),
            loss=keras.losses.CategoricalCrossentropy(from_logits=True, label_smoothing=smoothing),
            metrics=metrics,
            jit_compile=t.jit_compile,
            run_eagerly=t.run_eagerly,
        )

    def head(model, epochs: int):
        backbone.trainable = False  # frozen: BatchNorm runs in inference mode too
        compiled(model, t.head_learning_rate, epochs)

    def finetune(model):
        unfreeze_top(backbone, cfg.model.unfreeze_blocks, cfg.model.train_batchnorm)
        compiled(model, t.learning_rate, t.epochs)

    if cfg.model.finetune == "frozen":
        return [Phase("head", t.frozen_epochs, lambda model: head(model, t.frozen_epochs))]
    return [
        Phase("head", t.head_epochs, lambda model: head(model, t.head_epochs)),
        Phase("finetune", t.epochs, finetune),
    ]


# ------------------------------------------------------------------------------------------- recipe
@dataclass
class ImageSplits:
    train: LabelledImages | DecodedImages
    validation: LabelledImages | DecodedImages
    test: LabelledImages | DecodedImages | None
    labels: list[str]
    selection: LabelledImages | DecodedImages | None = None  # held out of train to choose the epoch


@dataclass
class ImageClassifier:
    """A trained model with its class names and how images are resized: what evaluate, predict and export use."""

    model: object
    labels: list[str]
    side: int  # images are resized to side x side, then centre-cropped to the model's input size
    interpolation: str
    cache_bytes: float

    def decode(self, images: LabelledImages) -> DecodedImages:
        return decode_images(images, self.side, self.interpolation, self.cache_bytes)


class ImageClassification(Recipe):
    # hub_task: the model card's pipeline tag
    name, hub_task = (
        "image_classification",
        "image-classification",
    )
    config_class = ImageClassificationConfig

    def read_data(self, cfg: ImageClassificationConfig) -> ImageSplits:
        """The splits (not yet decoded: that needs the backbone's input size) with their label sets checked."""
        d = cfg.data
        if not d.train:
            raise UserError(
                "data.train: not set; give a folder of class folders, a CSV of path,label, or tfds:NAME"
            )
        root = Path(d.train)
        laid_out = root.is_dir() and split_folder(root, "train") is not None
        validation = d.validation or (
            d.train if laid_out and split_folder(root, "validation") else ""
        )
        test = d.test or (d.train if laid_out and split_folder(root, "test") else "")
        return ImageSplits(
            *read_class_splits(
                lambda source, split: self.read_split(cfg, source, split),
                d.train,
                validation,
                test,
                d.validation_split,
                cfg.train.seed,
                d.selection_split,
            )
        )

    def read_split(self, cfg: ImageClassificationConfig, source: str, split: str) -> LabelledImages:
        return read_images(source, split, cfg.data.path_column, cfg.data.label_column)

    def build(self, cfg: ImageClassificationConfig, data: ImageSplits) -> Training:
        """Decode every image once (files that do not decode are skipped and listed), then the model."""

        backbone, preprocessor = load_backbone(cfg.model.backbone, modality="image", task=self.name)
        converter = preprocessor.image_converter
        image_size = input_size(converter)
        images = ImageClassifier(
            None,
            data.labels,
            round(image_size / cfg.data.crop_fraction),
            getattr(converter, "interpolation", "bilinear"),
            cfg.data.cache_max_gb * 2**30,
        )
        decoded = ImageSplits(
            *(
                images.decode(s) if s is not None else None
                for s in (data.train, data.validation, data.test)
            ),
            data.labels,
            images.decode(data.selection) if data.selection is not None else None,
        )
        for split, source in (
            ("train", cfg.data.train),
            ("validation", cfg.data.validation or cfg.data.train),
            ("test", cfg.data.test or cfg.data.train),
            ("selection", cfg.data.train),
        ):
            if getattr(decoded, split) is not None:
                check_decoded(
                    getattr(decoded, split), len(getattr(data, split)), split, source, data.labels
                )
        undecodable, skipped = skipped_files(
            [decoded.train, decoded.selection, decoded.validation, decoded.test]
        )
        k = len(data.labels)
        y_train = label_ids(decoded.train, data.labels)
        train_ds = augmented_batches(
            decoded.train,
            y_train,
            k,
            cfg.train.batch_size,
            cfg.train.seed,
            cfg.augment if cfg.augmented else None,
            image_size,
        )
        # the split the best epoch is chosen on
        chooser = decoded.validation if decoded.selection is None else decoded.selection
        y_chooser = label_ids(chooser, data.labels)
        val_ds = cropped_batches(chooser, y_chooser, k, image_size, cfg.train.batch_size)
        model = whole = image_classifier(backbone, k, converter, cfg.model.dropout)
        # A frozen backbone on centre crops gives the same features every epoch: compute them once.
        split = (
            training.head_on_features(model, len(y_train) + len(y_chooser), cfg.train)
            if cfg.model.finetune == "frozen" and not cfg.augmented
            else None
        )
        if split is not None:
            features, model = split
            batch, seed = cfg.train.batch_size, cfg.train.seed
            train_ds = feature_batches(
                model_outputs(features, decoded.train, batch), y_train, k, batch, seed
            )
            val_ds = feature_batches(model_outputs(features, chooser, batch), y_chooser, k, batch)
        steps = math.ceil(len(y_train) / cfg.train.batch_size)
        task = {
            "labels": data.labels,
            "image_size": image_size,
            "side": images.side,
            "interpolation": images.interpolation,
            "undecodable": len(undecodable),
            "examples": {s: len(getattr(decoded, s) or ()) for s in ("train", "validation", "test")}
            | ({"selection": len(decoded.selection)} if decoded.selection is not None else {}),
        }
        notes = [skipped] if skipped else []
        if not cfg.augmented and (
            cfg.augment != AugmentConfig()
            or cfg.train.label_smoothing != ImageTrainConfig.label_smoothing
        ):
            notes.append(
                "augment, train.label_smoothing: unused by a frozen head unless train.frozen_augment=true"
            )
        return Training(
            model,
            training_phases(cfg, backbone, steps, k),
            train_ds,
            val_ds,
            len(y_train),
            task,
            save_assets=lambda path: save_run_assets(path, converter, undecodable),
            class_weight=balanced_class_weights(y_train, k, cfg.train.class_weights),
            notes=notes,
            data=decoded,
            whole_model=whole if split is not None else None,
        )

    def load(
        self, run_path: Path, cfg: ImageClassificationConfig, task: dict, model
    ) -> ImageClassifier:
        return ImageClassifier(
            model,
            task["labels"],
            task["side"],
            task["interpolation"],
            cfg.data.cache_max_gb * 2**30,
        )

    def evaluate(
        self,
        predictor: ImageClassifier,
        images: LabelledImages | DecodedImages,
        split: str,
        cfg: ImageClassificationConfig,
    ) -> Evaluation:
        """Metrics report, confusion matrix, PR curves and a grid of misclassified images."""

        images = images if isinstance(images, DecodedImages) else predictor.decode(images)
        labels, top_k = predictor.labels, cfg.train.top_k
        y = label_ids(images, labels)
        probabilities = predict_probabilities(predictor.model, images)
        predicted = probabilities.argmax(axis=-1)
        report = classification_report(y, predicted, labels)
        if len(labels) > top_k:
            report[f"top{top_k}_accuracy"] = top_k_accuracy(y, probabilities, top_k)
        wrong = np.flatnonzero(predicted != y)
        report["misclassified"] = [
            {
                "image": images.origins[i],
                "label": labels[y[i]],
                "predicted": labels[predicted[i]],
                "probability": float(probabilities[i, predicted[i]]),
            }
            for i in wrong
        ]
        pictures = {
            f"{split}/confusion_matrix": confusion_matrix_png(report["confusion_matrix"], labels)
        }
        if len(wrong):
            crops = (
                center_crop(images.take(wrong[:16]), int(predictor.model.input.shape[1]))
                .numpy()
                .astype(np.uint8)
            )
            pictures[f"{split}/misclassified"] = misclassified_grid_png(
                crops, y[wrong[:16]], probabilities[wrong[:16]], labels
            )
        return Evaluation(
            report,
            text={f"{split}/report": format_report(report)},
            images=pictures,
            scores=(y, probabilities),
        )

    def predict(
        self, predictor: ImageClassifier, inputs: Sequence[str], pretokenized: bool = False
    ) -> list[dict]:
        """`[{"path", "label", "probability", "probabilities": {label: p}}]` for image files or folders;
        files that do not decode get `label: None` and an `error`."""

        files = list_image_files(list(inputs))
        images = predictor.decode(
            LabelledImages(files=files, labels=[None] * len(files), origins=files)
        )
        probabilities = predict_probabilities(predictor.model, images) if len(images) else []
        by_file, labels = dict(zip(images.origins, probabilities)), predictor.labels
        return [
            {
                "path": file,
                "label": labels[int(p.argmax())],
                "probability": float(p.max()),
                "probabilities": dict(zip(labels, map(float, p))),
            }
            if (p := by_file.get(file)) is not None
            else {
                "path": file,
                "label": None,
                "probability": None,
                "error": images.too_large.get(file, "not a decodable image"),
            }
            for file in files
        ]

    def export(self, predictor: ImageClassifier, directory: Path) -> Path:
        """`saved_model/` (encoded image bytes in) and float and quantised TFLite models."""

        export_tflite(predictor.model, directory)
        return export_image_classifier(
            predictor.model, predictor.labels, predictor.side, predictor.interpolation, directory
        )


RECIPE = ImageClassification()
