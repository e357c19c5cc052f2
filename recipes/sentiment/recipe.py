"""Sentiment analysis (text classification, any number of classes) by fine-tuning a text backbone.

The story of a run: read the data, load the backbone, pick the sequence length from the data,
build length-grouped tf.data pipelines, fine-tune, evaluate, export (the engine runs it).

    keras-zoo train sentiment                      # the bundled demo set, MiniLM-L6
    keras-zoo train sentiment --set data.train=train.tsv --set data.text_column=sentence
    python -m recipes.sentiment train --config my.yaml

From Python:

    >>> from recipes import engine, sentiment
    >>> cfg = sentiment.RECIPE.load_config(overrides=["train.epochs=1"])  # doctest: +SKIP
    >>> run, report = engine.train(sentiment.RECIPE, cfg)  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Literal

import numpy as np

from recipes.common.labels import label_ids, read_class_splits, sample_record
from recipes.common.metrics import classification_report, confusion_matrix_png, format_report
from recipes.common.text_data import LabelledTexts, read_texts
from recipes.engine import summaries, training
from recipes.engine.config import ModelConfig, RunConfig, TrainConfig, TuningConfig
from recipes.engine.contract import Evaluation, Phase, Projector, Recipe, Training
from recipes.sentiment.few_shot import FewShotConfig, few_shot_phases, resolve_finetune
from zoo.backbones import load_backbone
from zoo.export import export_text_classifier
from zoo.heads import freeze_token_embeddings, set_finetune_mode, text_classifier
from zoo.text_inputs import (
    TextEncoder,
    feature_batches,
    length_sorted_batches,
    load_tokenizer,
    predict_probabilities,
    training_batches,
)


@dataclass
class SentimentDataConfig:
    LIMITS: ClassVar[dict[str, str]] = {
        "validation_split": "(0, 1)",
        "selection_split": "[0, 1)",
        "max_length": ">= 0",
        "length_percentile": "(0, 100]",
        "examples_per_class": ">= 0",
        "sample_seed": ">= 0",
    }

    train: str = "demo"  # a .csv/.tsv/.jsonl file, a folder of class folders, tfds:NAME, or "demo"
    licence: str = ""  # the data's licence, for the model card ("": not stated)
    # empty: the demo set's own when train is "demo", else a stratified `validation_split` of train
    validation: str = ""
    test: str = ""
    text_column: str = "text"
    label_column: str = "label"
    validation_split: float = 0.1
    # > 0: hold out this share of train (stratified) to choose the best epoch on, so the validation
    # figures are not chosen on themselves; 0: the epoch is chosen on validation
    selection_split: float = 0.0
    max_length: int = (
        0  # training's cut, special tokens included (0: `length_percentile` of train lengths)
    )
    length_percentile: float = 99.0
    # > 0: train on this many examples of each class, drawn from train with `sample_seed` as
    # SetFit's benchmarks draw them (recipes.common.labels.sample_per_class); nothing is carved
    # from the sample, so validation is data.validation's or none (the run keeps its last epoch)
    examples_per_class: int = 0
    sample_seed: int = 0


@dataclass
class SentimentModelConfig(ModelConfig):
    # few_shot: contrastive tuning, then the head (recipes/sentiment/few_shot.py); auto: few_shot
    # when the smallest class has fewer than few_shot.auto_below training examples, else full
    finetune: Literal["full", "frozen", "lora", "few_shot", "auto"] = "full"
    pooling: Literal["mean", "cls"] = "mean"
    # True keeps the word embeddings as pretrained: ~9% faster steps, but SST-2 dev accuracy fell
    # from 90.4 to 89.0 (measured), so they train by default.
    freeze_embeddings: bool = False


@dataclass
class SentimentTrainConfig(TrainConfig):
    # SST-2 dev accuracy 90.60 after 3 epochs, 89.22 and 89.11 in two runs of 2 (benchmarks/RESULTS.md)
    epochs: int = 3


@dataclass
class SentimentConfig:
    data: SentimentDataConfig = field(default_factory=SentimentDataConfig)
    model: SentimentModelConfig = field(default_factory=SentimentModelConfig)
    train: SentimentTrainConfig = field(default_factory=SentimentTrainConfig)
    run: RunConfig = field(default_factory=RunConfig)
    few_shot: FewShotConfig = field(default_factory=FewShotConfig)
    tuning: TuningConfig = field(
        default_factory=lambda: TuningConfig(
            objective="val_accuracy",
            space={
                "train.learning_rate": {"min": 1e-5, "max": 3e-4, "sampling": "log"},
                "train.batch_size": [16, 32],
                "train.warmup_ratio": {"min": 0.0, "max": 0.2},
                "train.weight_decay": {"min": 0.0, "max": 0.1},
                "model.dropout": {"min": 0.0, "max": 0.3},
                "train.epochs": {"min": 1, "max": 4},
            },
        )
    )


# ---------------------------------------------------------------------------------------------- data
@dataclass
class SentimentData:
    train: LabelledTexts
    validation: (
        LabelledTexts | None
    )  # None: a data.examples_per_class sample without data.validation
    test: LabelledTexts | None
    labels: list[str]  # class names; a label's index is its class id
    selection: LabelledTexts | None = (
        None  # held out of train to choose the epoch (data.selection_split)
    )
    train_sample: dict | None = None  # data.examples_per_class's draw, for data.json


def pick_max_length(lengths: np.ndarray, cfg: SentimentDataConfig, backbone_limit: int) -> int:
    """The configured length, or a high percentile of the training lengths, capped by the backbone."""
    wanted = cfg.max_length or int(np.ceil(np.percentile(lengths, cfg.length_percentile)))
    return int(min(max(wanted, 8), backbone_limit))


# ------------------------------------------------------------------------------------------- recipe
@dataclass
class TextClassifier:
    """A trained model with its encoder and class names: what evaluate, predict and export use."""

    model: object
    encoder: object  # zoo.text_inputs.TextEncoder
    labels: list[str]


class Sentiment(Recipe):
    name = "sentiment"
    hub_task = "text-classification"
    config_class = SentimentConfig

    def read_data(self, cfg: SentimentConfig) -> SentimentData:
        d = cfg.data
        # never the demo set for the user's data
        validation = d.validation or ("demo" if d.train == "demo" else "")
        data = SentimentData(
            *read_class_splits(
                lambda source, split: self.read_split(cfg, source, split),
                d.train,
                validation,
                d.test,
                d.validation_split,
                cfg.train.seed,
                d.selection_split,
                d.examples_per_class,
                d.sample_seed,
            )
        )
        if d.examples_per_class:
            data.train_sample = sample_record(data.train, d.examples_per_class, d.sample_seed)
        return data

    def read_split(self, cfg: SentimentConfig, source: str, split: str) -> LabelledTexts:
        return read_texts(source, split, cfg.data.text_column, cfg.data.label_column)

    def build(self, cfg: SentimentConfig, data: SentimentData) -> Training:

        backbone, preprocessor = load_backbone(cfg.model.backbone, modality="text", task=self.name)
        # Training truncates at `max_length` to bound its padding; validation, evaluation and prediction read
        # whole texts, up to the backbone's limit (SST-2 dev: 89.33% against 89.11% cut at 44; RESULTS.md).
        # bucket lengths for XLA (a program per shape), else pad to the longest
        xla = cfg.train.jit_compile is True
        reader = TextEncoder(
            preprocessor.tokenizer, list(backbone.input), backbone.max_sequence_length, xla
        )
        lengths = reader.lengths(data.train.texts)  # before truncation
        max_length = pick_max_length(lengths, cfg.data, backbone.max_sequence_length)
        encoder = TextEncoder(
            preprocessor.tokenizer, list(backbone.input), max_length, pad_to_buckets=xla
        )
        y_train, batch, seed = (
            label_ids(data.train, data.labels),
            cfg.train.batch_size,
            cfg.train.seed,
        )
        mode = resolve_finetune(
            cfg.model.finetune, np.bincount(y_train, minlength=len(data.labels)), cfg.few_shot
        )
        task = {
            "labels": data.labels,
            "max_length": max_length,
            "read_length": reader.max_length,
            "truncated_train_examples": int((lengths > max_length).sum()),
            "finetune": mode,
        }

        def save_tokenizer(path: Path) -> None:
            preprocessor.tokenizer.save_to_preset(str(path / "tokenizer"))

        set_finetune_mode(backbone, "full" if mode == "few_shot" else mode, cfg.model.lora_rank)
        if cfg.model.freeze_embeddings:
            freeze_token_embeddings(backbone)
        # few_shot's head is a logistic regression, as SetFit's: no dropout
        dropout = 0.0 if mode == "few_shot" else cfg.model.dropout
        model = whole = text_classifier(backbone, len(data.labels), dropout, cfg.model.pooling)
        if mode == "few_shot":  # two phases with their own data, a fixed budget
            phases = few_shot_phases(
                model, encoder, data.train.texts, y_train, cfg.few_shot, cfg.train
            )
            return Training(
                model, phases, None, None, len(data.train), task, save_tokenizer, select_epoch=False
            )
        train_ds, steps = training_batches(encoder, data.train.texts, y_train, batch, seed, lengths)
        # the split the best epoch is chosen on; none: a sample without validation data
        chooser = data.validation if data.selection is None else data.selection
        y_chooser = label_ids(chooser, data.labels) if chooser is not None else np.zeros(0, int)
        val_ds = (
            length_sorted_batches(reader, chooser.texts, y_chooser, batch)[0]
            if chooser is not None
            else None
        )
        # A frozen backbone gives the same sentence vectors every epoch: compute them once (in
        # inference mode: the backbone's own dropout, which Keras applies even to frozen layers, is off).
        split = (
            training.head_on_features(model, len(y_train) + len(y_chooser), cfg.train)
            if mode == "frozen"
            else None
        )
        if split is not None:
            model = split[1]
            vectors = predict_probabilities(whole, encoder, data.train.texts, features=True)[
                1
            ].astype("float32")
            train_ds = feature_batches(
                vectors, y_train, batch, seed, lengths, max_length, bucketed=xla
            )
            if chooser is not None:
                val_x = predict_probabilities(whole, reader, chooser.texts, features=True)[1]
                val_ds = feature_batches(val_x.astype("float32"), y_chooser, batch)
        phase = Phase(
            "train", cfg.train.epochs, lambda m: training.compile_classifier(m, cfg.train, steps)
        )
        return Training(
            model,
            [phase],
            train_ds,
            val_ds,
            len(data.train),
            task,
            save_assets=save_tokenizer,
            whole_model=whole if split is not None else None,
            select_epoch=chooser is not None,
        )

    def load(self, run_path: Path, cfg: SentimentConfig, task: dict, model) -> TextClassifier:

        tokenizer = load_tokenizer(run_path)
        input_names = (
            list(model.input) if isinstance(model.input, dict) else ["token_ids", "padding_mask"]
        )
        # bucket lengths only for XLA, as in build
        xla = getattr(model, "jit_compile", False) is True
        return TextClassifier(
            model,
            TextEncoder(tokenizer, input_names, task["read_length"], pad_to_buckets=xla),
            task["labels"],
        )

    def evaluate(
        self, predictor: TextClassifier, texts: LabelledTexts, split: str, cfg: SentimentConfig
    ) -> Evaluation:
        """The classification report, confusion matrix, PR curves, misclassified texts and (up to
        `run.embeddings` of) the sentence vectors the head sees, for the projector."""

        labels = predictor.labels
        y = label_ids(texts, labels)
        probabilities, vectors = predict_probabilities(
            predictor.model, predictor.encoder, texts.texts, features=True
        )
        predicted = probabilities.argmax(axis=-1)
        report = classification_report(y, predicted, labels)
        shown = slice(0, cfg.run.embeddings)
        return Evaluation(
            report,
            scores=(y, probabilities),
            images={
                f"{split}/confusion_matrix": confusion_matrix_png(
                    report["confusion_matrix"], labels
                )
            },
            text={
                f"{split}/report": format_report(report),
                f"{split}/misclassified": summaries.misclassified_texts(
                    texts.texts, y, probabilities, labels
                ),
            },
            projector=Projector(
                f"{split} sentences",
                vectors[shown],
                {
                    "label": [labels[i] for i in y[shown]],
                    "predicted": [labels[i] for i in predicted[shown]],
                    "text": texts.texts[shown],
                },
            )
            if cfg.run.embeddings > 0
            else None,
        )

    def predict(
        self, predictor: TextClassifier, texts: Sequence[str], pretokenized: bool = False
    ) -> list[dict]:
        """`[{"text", "label", "probabilities": {label: p}}]` for raw texts."""

        probabilities = predict_probabilities(predictor.model, predictor.encoder, list(texts))
        labels = predictor.labels
        return [
            {
                "text": t,
                "label": labels[int(p.argmax())],
                "probabilities": dict(zip(labels, map(float, p))),
            }
            for t, p in zip(texts, probabilities)
        ]

    def export(self, predictor: TextClassifier, directory: Path) -> Path:
        """`saved_model/`: raw strings in, labels and probabilities out (tokenizer inside)."""

        return export_text_classifier(
            predictor.model, predictor.encoder, predictor.labels, directory
        )


RECIPE = Sentiment()
