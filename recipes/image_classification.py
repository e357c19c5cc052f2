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

    >>> from recipes import image_classification as ic
    >>> cfg = ic.load_config(overrides=["data.train=photos/"])  # doctest: +SKIP
    >>> run, report = ic.train(cfg)  # doctest: +SKIP
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Sequence

import numpy as np

from recipes import config as config_lib
from recipes.config import ModelConfig, RunConfig, TrainConfig, TuningConfig
from recipes.image_data import DecodedImages, LabelledImages, decode_images, list_image_files, read_images, split_folder
from recipes.labels import label_ids, label_order, stratified_split
from recipes.metrics import classification_report, confusion_matrix_png, format_report, image_grid_png, top_k_accuracy
from recipes.run_dir import RunDir
from zoo.errors import UserError

NAME = "image_classification"


@dataclass
class ImageDataConfig:
    train: str = ""  # a folder of class folders (or of train/ validation/ test/ folders), a CSV, or tfds:NAME
    validation: str = ""  # empty: the train folder's validation/ (or val/) folder, else `validation_split` of train
    test: str = ""  # empty: the train folder's test/ folder, if any
    path_column: str = "path"  # CSV columns
    label_column: str = "label"
    validation_split: float = 0.2
    crop_fraction: float = 0.875  # evaluation crops the centre 87.5% of the resized square (224 of 256)
    cache_max_gb: float = 4.0  # decoded squares are kept in memory up to this size, else decoded each epoch


@dataclass
class AugmentConfig:
    crop_scale: list[float] = field(default_factory=lambda: [0.25, 1.0])  # random resized crop: area range
    flip: bool = True  # horizontal
    rotation: float = 0.0  # Keras RandomRotation factor (fraction of a full turn); 0: off
    zoom: float = 0.0  # Keras RandomZoom factor; 0: off
    rand_augment: bool = False
    mixup: float = 0.0  # Keras MixUp alpha; 0: off
    cutmix: float = 0.0  # Keras CutMix factor; 0: off (with both on, each batch gets one of them)


@dataclass
class ImageModelConfig(ModelConfig):
    backbone: str = "efficientnet-lite0"
    finetune: Literal["full", "frozen", "lora"] = "full"  # full: head first, then the backbone; frozen: head only
    dropout: float = 0.2
    unfreeze_blocks: int = 0  # fine-tune only the top N blocks of the backbone; 0: all of it
    train_batchnorm: bool = False  # False: BatchNorm keeps its pretrained statistics while fine-tuning


@dataclass
class ImageTrainConfig(TrainConfig):
    head_epochs: int = 4  # phase 1: the new head on the frozen backbone
    head_learning_rate: float = 1e-3
    epochs: int = 8  # phase 2: fine-tuning the backbone
    learning_rate: float = 1e-4
    weight_decay: float = 0.05
    clipnorm: float = 1.0  # cheap here (no embedding matrix)
    warmup_ratio: float = 0.1
    label_smoothing: float = 0.1
    class_weights: Literal["auto", "balanced", "none"] = "auto"  # auto: balanced when classes differ by > 1.5x
    top_k: int = 5  # top-k accuracy is reported when there are more than k classes
    early_stopping_patience: int = 0
    # float32: mixed bfloat16 fine-tunes EfficientNet 2.3x *slower* on this project's AMX CPU
    # (depthwise convolutions; measured 12.2 vs 5.3 s per batch of 32), unlike the text encoders.
    precision: Literal["auto", "float32", "mixed_bfloat16", "mixed_float16"] = "float32"


@dataclass
class ImageClassificationConfig:
    data: ImageDataConfig = field(default_factory=ImageDataConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    model: ImageModelConfig = field(default_factory=ImageModelConfig)
    train: ImageTrainConfig = field(default_factory=ImageTrainConfig)
    run: RunConfig = field(default_factory=RunConfig)
    tuning: TuningConfig = field(default_factory=lambda: TuningConfig(objective="val_accuracy", space={
        "train.head_learning_rate": {"min": 3e-4, "max": 3e-3, "sampling": "log"},
        "train.learning_rate": {"min": 1e-5, "max": 3e-4, "sampling": "log"},
        "model.dropout": {"min": 0.0, "max": 0.4},
        "model.unfreeze_blocks": [0, 2, 4],
        "train.label_smoothing": [0.0, 0.1],
        "augment.mixup": [0.0, 0.2],
    }))


def load_config(path: str | Path | None = None, overrides: Sequence[str] = ()) -> ImageClassificationConfig:
    return config_lib.load_config(ImageClassificationConfig, path, overrides)


# ---------------------------------------------------------------------------------------------- data
@dataclass
class ImageSplits:
    train: LabelledImages
    validation: LabelledImages
    test: LabelledImages | None
    labels: list[str]


def load_data(cfg: ImageDataConfig, seed: int) -> ImageSplits:
    """Read the splits (not yet decoded) and check the label sets."""
    if not cfg.train:
        raise UserError("data.train: not set; give a folder of class folders, a CSV of path,label, or tfds:NAME")
    root = Path(cfg.train)
    laid_out = root.is_dir() and split_folder(root, "train") is not None
    train = read_images(cfg.train, "train", cfg.path_column, cfg.label_column)
    validation_source = cfg.validation or (cfg.train if laid_out and split_folder(root, "validation") else "")
    if validation_source:
        validation = read_images(validation_source, "validation", cfg.path_column, cfg.label_column)
    else:
        train, validation = stratified_split(train, cfg.validation_split, seed)
    test_source = cfg.test or (cfg.train if laid_out and split_folder(root, "test") else "")
    test = read_images(test_source, "test", cfg.path_column, cfg.label_column) if test_source else None
    labels = label_order(train.labels)
    if len(labels) < 2:
        raise UserError(f"{cfg.train}: needs at least two classes, found {labels}")
    for name, split in (("validation", validation), ("test", test)):
        unknown = sorted(set(split.labels) - set(labels)) if split else []
        if unknown:
            raise UserError(f"{name} data has classes that training has none of: {', '.join(unknown)}")
    return ImageSplits(train, validation, test, labels)


def check_classes(decoded: DecodedImages, labels: list[str], source: str) -> None:
    """After decoding: every class still has training images."""
    counts = {name: 0 for name in labels}
    for label in decoded.labels:
        counts[label] += 1
    empty = [name for name, n in counts.items() if n == 0]
    if empty:
        raise UserError(f"{source}: class {', '.join(empty)} has no decodable training images")


def balanced_class_weights(y: np.ndarray, num_classes: int, mode: str) -> dict[int, float] | None:
    """`n / (k * count)` per class, for `balanced`, or for `auto` when the classes differ by more than 1.5x."""
    counts = np.bincount(y, minlength=num_classes).astype(float)
    if mode == "none" or (mode == "auto" and counts.max() <= 1.5 * counts.min()):
        return None
    return {i: float(len(y) / (num_classes * c)) for i, c in enumerate(counts)}


def make_augment(cfg: AugmentConfig, image_size: int, seed: int):
    """A tf.data map function for training batches: random resized crop (or centre crop), then
    the Keras augmentation layers switched on in the config, then MixUp / CutMix on the labels."""
    import keras  # noqa: PLC0415
    import tensorflow as tf  # noqa: PLC0415

    from zoo.image_inputs import center_crop, random_resized_crop  # noqa: PLC0415

    if len(cfg.crop_scale) != 2 or not 0 < cfg.crop_scale[0] <= cfg.crop_scale[1] <= 1:
        raise UserError(f"augment.crop_scale must be [low, high] with 0 < low <= high <= 1, not {cfg.crop_scale}")
    layers = []
    if cfg.flip:
        layers.append(keras.layers.RandomFlip("horizontal", seed=seed))
    if cfg.rotation:
        layers.append(keras.layers.RandomRotation(cfg.rotation, fill_mode="reflect", seed=seed))
    if cfg.zoom:
        layers.append(keras.layers.RandomZoom(cfg.zoom, fill_mode="reflect", seed=seed))
    if cfg.rand_augment:
        layers.append(keras.layers.RandAugment(value_range=(0, 255), seed=seed))
    mixers = ([keras.layers.MixUp(alpha=cfg.mixup, seed=seed)] if cfg.mixup else []) + (
        [keras.layers.CutMix(factor=cfg.cutmix, seed=seed)] if cfg.cutmix else [])

    def augment(images, labels):
        if tuple(cfg.crop_scale) == (1.0, 1.0):
            x = center_crop(images, image_size)
        else:
            x = random_resized_crop(images, image_size, tuple(cfg.crop_scale))
        for layer in layers:
            x = layer(x, training=True)
        if mixers:
            def mix(layer):
                return lambda: tuple(layer({"images": x, "labels": labels}, training=True).values())

            if len(mixers) == 1:
                x, labels = mix(mixers[0])()
            else:
                x, labels = tf.cond(tf.random.uniform([]) < 0.5, mix(mixers[0]), mix(mixers[1]))
        return tf.clip_by_value(x, 0.0, 255.0), labels

    return augment


def train_dataset(images: DecodedImages, y: np.ndarray, num_classes: int, cfg: ImageClassificationConfig,
                  image_size: int):
    """Shuffled, augmented batches of (pixels, one-hot labels)."""
    import tensorflow as tf  # noqa: PLC0415

    onehot = np.eye(num_classes, dtype=np.float32)[y]
    ds = images.dataset(onehot, shuffle_seed=cfg.train.seed).batch(cfg.train.batch_size)
    ds = ds.map(make_augment(cfg.augment, image_size, cfg.train.seed), num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(tf.data.AUTOTUNE)


def eval_dataset(images: DecodedImages, y: np.ndarray | None, num_classes: int, image_size: int, batch_size: int):
    """Centre-cropped batches, in order (with one-hot labels when `y` is given)."""
    import tensorflow as tf  # noqa: PLC0415

    from zoo.image_inputs import center_crop  # noqa: PLC0415

    if y is None:
        ds = images.dataset().batch(batch_size).map(lambda x: center_crop(x, image_size))
    else:
        ds = images.dataset(np.eye(num_classes, dtype=np.float32)[y]).batch(batch_size)
        ds = ds.map(lambda x, t: (center_crop(x, image_size), t))
    return ds.prefetch(tf.data.AUTOTUNE)


def predict_probabilities(model, images: DecodedImages, batch_size: int = 32) -> np.ndarray:
    """Class probabilities for decoded images, in their order (centre crops)."""
    import keras  # noqa: PLC0415

    size = int(model.input.shape[1])
    logits = model.predict(eval_dataset(images, None, 0, size, batch_size), verbose=0)
    return keras.ops.convert_to_numpy(keras.ops.softmax(logits.astype("float32"), axis=-1))


# --------------------------------------------------------------------------------------------- model
def build_model(cfg: ImageModelConfig, backbone, converter, num_classes: int):
    from zoo.heads import image_classifier  # noqa: PLC0415

    if cfg.finetune == "lora":
        raise UserError("model.finetune: 'lora' is for transformer text backbones; use 'full' or 'frozen'")
    return image_classifier(backbone, num_classes, converter, cfg.dropout)


def training_phases(cfg: ImageClassificationConfig, backbone, steps_per_epoch: int, num_classes: int) -> list:
    """Phase 1 trains the head on the frozen backbone; phase 2 (finetune: full) unfreezes the
    backbone (or its top blocks) at the lower fine-tuning learning rate."""
    import keras  # noqa: PLC0415

    from recipes import engine  # noqa: PLC0415
    from zoo.heads import unfreeze_top  # noqa: PLC0415

    t = cfg.train

    def compiled(model, learning_rate: float, epochs: int) -> None:
        metrics = [keras.metrics.CategoricalAccuracy(name="accuracy"),
                   keras.metrics.F1Score(average="macro", name="macro_f1")]
        if num_classes > t.top_k:
            metrics.append(keras.metrics.TopKCategoricalAccuracy(t.top_k, name=f"top{t.top_k}_accuracy"))
        model.compile(optimizer=engine.make_optimizer(t, steps_per_epoch, learning_rate, epochs),
                      loss=keras.losses.CategoricalCrossentropy(from_logits=True, label_smoothing=t.label_smoothing),
                      metrics=metrics, jit_compile=t.jit_compile,
                      run_eagerly=t.run_eagerly)

    def head(model):
        backbone.trainable = False  # frozen: BatchNorm runs in inference mode too
        compiled(model, t.head_learning_rate, t.head_epochs)

    def finetune(model):
        unfreeze_top(backbone, cfg.model.unfreeze_blocks, cfg.model.train_batchnorm)
        compiled(model, t.learning_rate, t.epochs)

    phases = [engine.Phase("head", t.head_epochs, head)]
    if cfg.model.finetune == "full":
        phases.append(engine.Phase("finetune", t.epochs, finetune))
    return phases


# ----------------------------------------------------------------------------------------- lifecycle
def train(cfg: ImageClassificationConfig, overwrite: bool = False, resume: bool = False,
          verbose: int | str = "auto", export: bool = True) -> tuple[RunDir, dict]:
    """Train head then backbone, evaluate on validation (and test), export; returns the run and its metrics."""
    import math  # noqa: PLC0415

    from recipes import engine  # noqa: PLC0415
    from zoo.backbones import load_backbone  # noqa: PLC0415
    from zoo.heads import as_float32  # noqa: PLC0415
    from zoo.image_inputs import input_size  # noqa: PLC0415

    run, cfg = engine.begin_run(NAME, cfg, load_config, overwrite, resume)
    backbone, preprocessor = load_backbone(cfg.model.backbone, modality="image")
    converter = preprocessor.image_converter
    image_size = input_size(converter)
    side = round(image_size / cfg.data.crop_fraction)
    interpolation = getattr(converter, "interpolation", "bilinear")
    splits = load_data(cfg.data, cfg.train.seed)
    decode = lambda images: decode_images(images, side, interpolation, cfg.data.cache_max_gb * 2**30)  # noqa: E731
    train_images, val_images = decode(splits.train), decode(splits.validation)
    test_images = decode(splits.test) if splits.test is not None else None
    check_classes(train_images, splits.labels, cfg.data.train)
    engine.create_run(run, cfg, resume)
    undecodable = [o for d in (train_images, val_images, test_images) if d for o in d.undecodable]
    (run.path / "undecodable.txt").write_text("".join(f"{origin}\n" for origin in undecodable))
    if undecodable:
        print(f"skipped {len(undecodable)} files that do not decode as images (listed in "
              f"{run.path / 'undecodable.txt'})")
    run.write_json(run.task, {"labels": splits.labels, "image_size": image_size, "side": side,
                              "interpolation": interpolation, "undecodable": len(undecodable),
                              "examples": {"train": len(train_images), "validation": len(val_images),
                                           "test": len(test_images) if test_images else 0}})

    k = len(splits.labels)
    y_train = label_ids(train_images, splits.labels)
    train_ds = train_dataset(train_images, y_train, k, cfg, image_size)
    val_ds = eval_dataset(val_images, label_ids(val_images, splits.labels), k, image_size,
                          cfg.train.batch_size)
    model = build_model(cfg.model, backbone, converter, k)
    steps = math.ceil(len(y_train) / cfg.train.batch_size)
    history = engine.fit(model, train_ds, val_ds, cfg.train, run, len(y_train),
                         phases=training_phases(cfg, backbone, steps, k),
                         class_weight=balanced_class_weights(y_train, k, cfg.train.class_weights), verbose=verbose,
                         logging=cfg.run)
    model = as_float32(model)

    step = len(history["epoch"])
    report = {"validation": evaluate_images(model, val_images, splits.labels, run, "validation", cfg.train.top_k, step)}
    if test_images is not None:
        report["test"] = evaluate_images(model, test_images, splits.labels, run, "test", cfg.train.top_k, step)
    report["train_examples_per_second"] = [v for v in history.get("examples_per_second", []) if v == v]
    engine.finish_run(run, cfg)
    if export:
        export_run(run, model, splits.labels)
    return run, report


def evaluate_images(model, images: DecodedImages, labels: list[str], run: RunDir, split: str,
                    top_k: int = 5, step: int = 0) -> dict:
    """Metrics report, confusion matrix, PR curves and a grid of misclassified images, to metrics.json and TensorBoard."""
    from recipes import engine  # noqa: PLC0415
    from zoo.image_inputs import center_crop  # noqa: PLC0415

    y = label_ids(images, labels)
    probabilities = predict_probabilities(model, images)
    predicted = probabilities.argmax(axis=-1)
    report = classification_report(y, predicted, labels)
    if len(labels) > top_k:
        report[f"top{top_k}_accuracy"] = top_k_accuracy(y, probabilities, top_k)
    wrong = np.flatnonzero(predicted != y)
    report["misclassified"] = [{"image": images.origins[i], "label": labels[y[i]], "predicted": labels[predicted[i]],
                                "probability": float(probabilities[i, predicted[i]])} for i in wrong]
    pictures = {f"{split}/confusion_matrix": confusion_matrix_png(report["confusion_matrix"], labels)}
    if len(wrong):
        shown = wrong[:16]
        crops = center_crop(images.take(shown), int(model.input.shape[1])).numpy().astype(np.uint8)
        captions = [f"true {labels[y[i]]}\npred {labels[predicted[i]]} {probabilities[i, predicted[i]]:.2f}"
                    for i in shown]
        pictures[f"{split}/misclassified"] = image_grid_png(crops, captions)
    engine.write_report(run, split, report, step, images=pictures, text={f"{split}/report": format_report(report)},
                        scores=(y, probabilities))
    return report


def load_run(path: str | Path):
    """`(run, cfg, model, task)` of a finished run, for evaluate / predict / export."""
    from recipes import engine  # noqa: PLC0415

    run, cfg, task, model = engine.load_finished_run(path, load_config)
    return run, cfg, model, task


def evaluate(run_path: str | Path, source: str = "", split: str = "validation") -> dict:
    """Evaluate a finished run on `source` (default: the run's own validation data)."""
    run, cfg, model, task = load_run(run_path)
    if source:
        raw = read_images(source, split, cfg.data.path_column, cfg.data.label_column)
    else:
        raw = getattr(load_data(cfg.data, cfg.train.seed), split)
        if raw is None:
            raise UserError(f"{run.config}: the run has no {split} data; pass --data")
    images = decode_images(raw, task["side"], task["interpolation"], cfg.data.cache_max_gb * 2**30)
    return evaluate_images(model, images, task["labels"], run, f"evaluate_{split}", cfg.train.top_k)


def predict(run_path: str | Path, inputs: Sequence[str]) -> list[dict]:
    """`[{"path", "label", "probability", "probabilities": {label: p}}]` for image files or folders;
    files that do not decode get `label: None` and an `error`."""
    _, cfg, model, task = load_run(run_path)
    files = list_image_files(list(inputs))
    images = decode_images(LabelledImages(files=files, labels=[None] * len(files), origins=files),
                           task["side"], task["interpolation"], cfg.data.cache_max_gb * 2**30)
    probabilities = predict_probabilities(model, images) if len(images) else []
    by_file = {origin: p for origin, p in zip(images.origins, probabilities)}
    labels = task["labels"]
    rows = []
    for file in files:
        if file not in by_file:
            rows.append({"path": file, "label": None, "probability": None, "error": "not a decodable image"})
            continue
        p = by_file[file]
        rows.append({"path": file, "label": labels[int(p.argmax())], "probability": float(p.max()),
                     "probabilities": dict(zip(labels, map(float, p)))})
    return rows


def export_run(run: RunDir, model=None, labels: list[str] | None = None) -> Path:
    """Write `export/model.keras`, `export/saved_model` (image bytes in) and the TFLite models."""
    from zoo.export import export_image_classifier, export_tflite  # noqa: PLC0415

    task = run.read_json(run.task)
    if model is None:
        run, _, model, task = load_run(run.path)
        labels = task["labels"]
    else:
        model.save(str(run.keras_model))
    export_tflite(model, run.export)
    return export_image_classifier(model, labels, task["side"], task["interpolation"], run.export)


def main(argv: Sequence[str] | None = None) -> int:
    from recipes.cli import main as cli_main  # noqa: PLC0415

    return cli_main(argv, recipe=NAME)


if __name__ == "__main__":
    raise SystemExit(main())
