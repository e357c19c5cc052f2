"""Named-entity recognition (token classification) by fine-tuning a text backbone.

The story of a run: read tagged sentences (CoNLL, JSONL or TFDS; IOB1, IOB2 or BIOES, converted to
IOB2), load the backbone, split each word into subwords (the first subword carries the word's tag,
the others are left out of the loss), split sentences longer than the sequence length into
overlapping windows, pack consecutive sentences of a document into shared windows (each sentence
sees its neighbours, in training and evaluation), fine-tune with length-grouped batches, score
entity F1 on validation after every epoch (the best epoch is kept), evaluate, export.

    keras-zoo train ner --set data.train=train.txt --set data.validation=valid.txt
    keras-zoo predict ner runs/ner/NAME "Angela Merkel visited Paris."

From Python:

    >>> from recipes import engine, ner
    >>> cfg = ner.RECIPE.load_config(overrides=["data.train=train.txt"])  # doctest: +SKIP
    >>> run, report = engine.train(ner.RECIPE, cfg)  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Literal

import keras
import numpy as np
import tensorflow as tf

from recipes.engine import training
from recipes.engine.config import ModelConfig, RunConfig, TrainConfig, TuningConfig
from recipes.engine.contract import Evaluation, Phase, Projector, Recipe, Training
from recipes.engine.summaries import markdown_table
from recipes.ner import tags as ner_tags
from recipes.ner.data import (
    TaggedSentences,
    check_known_tags,
    context_groups,
    join_groups,
    normalise_tags,
    read_tagged,
    split_groups,
    tag_set,
)
from recipes.ner.export import export_token_classifier
from recipes.ner.token_inputs import (
    Tagger,
    TokenEncoder,
    encode_windows,
    pretokenize,
    window_batches,
)
from zoo.backbones import load_backbone
from zoo.errors import UserError
from zoo.heads import freeze_token_embeddings, set_finetune_mode, token_classifier
from zoo.text_inputs import load_tokenizer


@dataclass
class NerDataConfig:
    LIMITS: ClassVar[dict[str, str]] = {"validation_split": "(0, 1)", "max_length": ">= 8"}

    train: str = ""  # a CoNLL file, a JSONL file (tokens + tags, or text + spans) or tfds:NAME
    licence: str = ""  # the data's licence, for the model card ("": not stated)
    validation: str = ""  # empty: carve `validation_split` of the training sentences
    test: str = ""
    token_column: int = 0  # CoNLL columns (0-based; negative counts from the end)
    tag_column: int = -1
    tag_scheme: Literal["auto", "IOB1", "IOB2", "BIOES"] = (
        "auto"  # auto: detected from the training tags
    )
    validation_split: float = 0.1
    # Subword tokens per window, start and end tokens included; longer sentences are split into
    # overlapping windows (and merged back at prediction), never truncated.
    max_length: int = 128
    # Tag each sentence with its neighbours: consecutive sentences of a document (CoNLL -DOCSTART-
    # sections) share one window up to max_length when the recipe evaluates. Training windows:
    # `mixed`, random sizes from one sentence to a full window (CoNLL-2003 test F1 88.50 in context,
    # 88.23 for each sentence alone, as `predict` tags it); `full`, full windows (89.10 in context,
    # but 86.46 alone); `off`: one sentence a window (88.15). All at peak rate 1e-4; `mixed` at the
    # default 2e-4: 89.30 / 88.97. Measured: benchmarks/RESULTS.md.
    document_context: Literal["mixed", "full", "off"] = "mixed"


@dataclass
class NerModelConfig(ModelConfig):
    # Capitalisation, which uncased tokenizers lose: `segment` marks the subwords of capitalised words
    # with segment id 1 (BERT-style backbones); +1.9 CoNLL-2003 dev F1 after one epoch with MiniLM-L6
    # (a word-shape embedding beside the head's input instead: +0.0). `auto`: segment where the
    # backbone has segment ids.
    case_feature: Literal["auto", "segment", "none"] = "auto"
    # constrained: the most probable valid IOB2 tag sequence (Viterbi); argmax: each word's best tag.
    decoding: Literal["constrained", "argmax"] = "constrained"
    # True keeps the word embeddings as pretrained (as the sentiment recipe's key)
    freeze_embeddings: bool = False


@dataclass
class NerTrainConfig(TrainConfig):
    # CoNLL-2003, MiniLM-L6, one sentence a window, on an earlier machine: 3 epochs test F1 88.7 in
    # 23 min, 4 epochs 88.9 in 29 min; here, mixed document context: 88.5 in 17 min (measured).
    epochs: int = 3
    # Peak rate: CoNLL-2003 test F1 89.30 at 2e-4 against 88.50 at 1e-4 (3 epochs, mixed context; dev
    # F1 93.45 against 92.96; benchmarks/RESULTS.md).
    learning_rate: float = 2e-4
    monitor: str = "val_entity_f1"


@dataclass
class NerConfig:
    data: NerDataConfig = field(default_factory=NerDataConfig)
    model: NerModelConfig = field(default_factory=NerModelConfig)
    train: NerTrainConfig = field(default_factory=NerTrainConfig)
    run: RunConfig = field(default_factory=RunConfig)
    tuning: TuningConfig = field(
        default_factory=lambda: TuningConfig(
            objective="val_entity_f1",
            space={
                "train.learning_rate": {"min": 2e-5, "max": 3e-4, "sampling": "log"},
                "train.batch_size": [16, 32],
                "train.warmup_ratio": {"min": 0.0, "max": 0.2},
                "model.dropout": {"min": 0.0, "max": 0.3},
                "train.epochs": {"min": 2, "max": 5},
            },
        )
    )


# ---------------------------------------------------------------------------------------------- data
@dataclass
class NerData:
    train: TaggedSentences
    validation: TaggedSentences
    test: TaggedSentences | None
    tags: list[str]  # the model's output tags (IOB2); a tag's index is its class id
    scheme: str  # the scheme the data was written in


def _split(
    data: TaggedSentences, fraction: float, seed: int
) -> tuple[TaggedSentences, TaggedSentences]:
    order = np.random.default_rng(seed).permutation(len(data))
    held = set(order[: max(1, round(fraction * len(data)))].tolist())
    return data.subset([i for i in range(len(data)) if i not in held]), data.subset(sorted(held))


def in_context(
    data: TaggedSentences, encoder, context: str, seed: int | None = None
) -> list[list[int]]:
    """The groups of sentences that share a window (`ner_data.context_groups`) for a
    `data.document_context` setting; `seed`: training's groups (random sizes for `mixed`)."""
    if context == "off":
        return [[i] for i in range(len(data))]
    rng = np.random.default_rng(seed) if seed is not None and context == "mixed" else None
    return context_groups(data, encoder.subword_counts(data.tokens), encoder.window, rng)


def tag_in_context(
    tagger, data: TaggedSentences, context: str
) -> tuple[list[list[str]], list[list[float]]]:
    """Tags and their probabilities per sentence, each sentence tagged together with its document
    neighbours unless `context` is off."""
    groups = in_context(data, tagger.encoder, context)
    tags, scores = tagger(join_groups(data.tokens, groups))
    lengths = [len(t) for t in data.tokens]
    return split_groups(tags, groups, lengths), split_groups(scores, groups, lengths)


def _entity_f1_callback(tag_validation, validation: TaggedSentences):

    class EntityF1(keras.callbacks.Callback):
        """Adds validation entity precision/recall/F1 and token accuracy to the epoch logs."""

        def on_epoch_end(self, epoch, logs=None):
            if logs is None:
                return
            predicted, _ = tag_validation()
            report = ner_tags.entity_report(validation.tags, predicted)
            logs.update(
                {
                    "val_entity_f1": report["f1"],
                    "val_entity_precision": report["precision"],
                    "val_entity_recall": report["recall"],
                    "val_token_accuracy": report["token_accuracy"],
                }
            )

    return EntityF1()


# --------------------------------------------------------------------------------------------- model
def resolve_case_feature(setting: str, backbone) -> str:
    if setting == "auto":
        return "segment" if "segment_ids" in backbone.input else "none"
    if setting == "segment" and "segment_ids" not in backbone.input:
        raise UserError(
            f"model.case_feature: {type(backbone).__name__} has no segment ids; use 'none'"
        )
    return setting


def compile_tagger(model, cfg: TrainConfig, steps_per_epoch: int) -> None:

    # Subwords after a word's first, padding and start/end tokens have weight 0: not scored (the
    # batches carry the weights: recipes.ner.token_inputs.token_loss_weights).
    model.compile(
        optimizer=training.make_optimizer(cfg, steps_per_epoch),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        jit_compile=cfg.jit_compile,
        run_eagerly=cfg.run_eagerly,
    )


def mistagged_sentences(
    data: TaggedSentences, predicted: Sequence[Sequence[str]], limit: int = 25
) -> str:
    """Sentences whose predicted entities differ from the true ones, as a Markdown table of the
    sentence, its true and its predicted entities (`text (TYPE)`)."""

    def spans(tokens, tags):
        return (
            ", ".join(f"{' '.join(tokens[a:b])} ({kind})" for kind, a, b in ner_tags.entities(tags))
            or "-"
        )

    wrong = [
        i
        for i, (t, p) in enumerate(zip(data.tags, predicted))
        if ner_tags.entities(t) != ner_tags.entities(p)
    ]
    rows = [
        [
            " ".join(data.tokens[i]),
            spans(data.tokens[i], data.tags[i]),
            spans(data.tokens[i], predicted[i]),
        ]
        for i in wrong[:limit]
    ]
    heading = f"{len(wrong)} of {len(data)} sentences with wrong entities" + (
        f"; the first {limit}:" if len(wrong) > limit else ":"
    )
    return (
        heading + "\n\n" + markdown_table(["sentence", "true entities", "predicted entities"], rows)
    )


# ------------------------------------------------------------------------------------------- recipe
class Ner(Recipe):
    name = "ner"
    hub_task = "token-classification"
    config_class = NerConfig
    pretokenized_input = True

    def read_data(self, cfg: NerConfig) -> NerData:
        d = cfg.data
        if not d.train:
            raise UserError(
                "data.train: no training data; set data.train=FILE (CoNLL or JSONL) or tfds:NAME"
            )
        train = read_tagged(d.train, "train", d.token_column, d.tag_column)
        scheme = normalise_tags(train, d.tag_scheme)
        if d.validation:
            validation = self._read(cfg, d.validation, "validation", scheme)
        else:
            train, validation = _split(train, d.validation_split, cfg.train.seed)
        test = self._read(cfg, d.test, "test", scheme) if d.test else None
        tags = tag_set(train)
        if len(tags) < 3:
            raise UserError(f"{d.train}: no entities in the training data (every tag is O)")
        for split in (validation, test):
            if split is not None:
                check_known_tags(split, tags)
        return NerData(train, validation, test, tags, scheme)

    def _read(self, cfg: NerConfig, source: str, split: str, scheme: str) -> TaggedSentences:
        data = read_tagged(source, split, cfg.data.token_column, cfg.data.tag_column)
        normalise_tags(data, scheme)
        return data

    def read_split(self, cfg: NerConfig, source: str, split: str) -> TaggedSentences:
        return self._read(cfg, source, split, cfg.data.tag_scheme)

    def build(self, cfg: NerConfig, data: NerData) -> Training:

        backbone, preprocessor = load_backbone(cfg.model.backbone, modality="text", task=self.name)
        case_feature = resolve_case_feature(cfg.model.case_feature, backbone)
        max_length = min(cfg.data.max_length, backbone.max_sequence_length)
        encoder = TokenEncoder(
            preprocessor.tokenizer, list(backbone.input), max_length, case_feature
        )
        tag_id = {t: i for i, t in enumerate(data.tags)}
        groups = in_context(data.train, encoder, cfg.data.document_context, seed=cfg.train.seed)
        windows = encode_windows(
            encoder,
            join_groups(data.train.tokens, groups),
            join_groups([[tag_id[t] for t in tags] for tags in data.train.tags], groups),
        )
        # train.batch_size counts sentences: with several to a window, a batch holds as many windows as
        # carry that many sentences on average (the same tokens a step, so the same learning rate suits).
        batch_windows = max(1, round(cfg.train.batch_size * len(groups) / len(data.train)))
        train_ds, steps = window_batches(encoder, windows, batch_windows, cfg.train.seed)
        set_finetune_mode(backbone, cfg.model.finetune, cfg.model.lora_rank)
        if cfg.model.freeze_embeddings:
            freeze_token_embeddings(backbone)
        model = token_classifier(backbone, len(data.tags), cfg.model.dropout)
        tagger = Tagger(model, encoder, data.tags, cfg.model.decoding == "constrained")
        task = {
            "tags": data.tags,
            "scheme": data.scheme,
            "max_length": max_length,
            "case_feature": case_feature,
            "sentences": {
                "train": len(data.train),
                "validation": len(data.validation),
                "test": len(data.test) if data.test else 0,
            },
            "windowed_train_sentences": windows.windowed_sentences,
            "train_windows": len(windows.lengths),
        }
        notes = (
            [
                f"{windows.windowed_sentences} training sentences are longer than {max_length} tokens: "
                "split into overlapping windows"
            ]
            if windows.windowed_sentences
            else []
        )
        if len(groups) < len(data.train):
            notes.append(
                f"document context: {len(data.train)} training sentences in {len(groups)} windows, "
                f"{batch_windows} windows a batch"
            )
        entity_f1 = _entity_f1_callback(
            lambda: tag_in_context(tagger, data.validation, cfg.data.document_context),
            data.validation,
        )
        return Training(
            model,
            [Phase("train", cfg.train.epochs, lambda m: compile_tagger(m, cfg.train, steps))],
            train_ds,
            None,
            len(data.train),
            task,
            callbacks=[entity_f1],
            save_assets=lambda path: preprocessor.tokenizer.save_to_preset(str(path / "tokenizer")),
            notes=notes,
        )

    def load(self, run_path: Path, cfg: NerConfig, task: dict, model):

        tokenizer = load_tokenizer(run_path)
        encoder = TokenEncoder(
            tokenizer, list(model.input), task["max_length"], task["case_feature"]
        )
        return Tagger(model, encoder, task["tags"], cfg.model.decoding == "constrained")

    def evaluate(self, tagger, data: TaggedSentences, split: str, cfg: NerConfig) -> Evaluation:
        """Entity metrics (seqeval / conlleval), the per-type table, the entity-type confusion, the
        mistagged sentences and (up to `run.embeddings` of) the true entities' vectors."""
        check_known_tags(data, tagger.tags)
        predicted, _ = tag_in_context(tagger, data, cfg.data.document_context)
        report = ner_tags.entity_report(data.tags, predicted)
        report["windowed_sentences"] = tagger.count_windowed(data.tokens)
        projector = None
        if cfg.run.tensorboard and cfg.run.embeddings > 0:
            spans = [(s, *e) for s, tags in enumerate(data.tags) for e in ner_tags.entities(tags)][
                : cfg.run.embeddings
            ]
            vectors = tagger.span_vectors(
                data.tokens, [(s, start, end) for s, _, start, end in spans]
            )
            found = [
                {(start, end): kind for kind, start, end in ner_tags.entities(tags)}
                for tags in predicted
            ]
            projector = Projector(
                f"{split} entities",
                vectors,
                {
                    "type": [kind for _, kind, _, _ in spans],
                    "predicted": [found[s].get((start, end), "O") for s, _, start, end in spans],
                    "text": [" ".join(data.tokens[s][start:end]) for s, _, start, end in spans],
                },
            )
        return Evaluation(
            report,
            projector=projector,
            images={f"{split}/entity_type_confusion": ner_tags.type_confusion_png(report)},
            text={
                f"{split}/entities": ner_tags.format_entity_report(report),
                f"{split}/mistagged": mistagged_sentences(data, predicted),
            },
        )

    def predict(self, tagger, texts: Sequence[str], pretokenized: bool = False) -> list[dict]:
        """Entities in raw texts: `[{"text", "entities": [{"text", "type", "start", "end", "score"}]}]`.

        Offsets are character offsets into the text (`text[start:end]` is the entity). With
        `pretokenized`, each text is whitespace-separated tokens and offsets count tokens instead.
        """

        texts = list(texts)
        if pretokenized:
            words = [t.split() for t in texts]
            starts, ends = (
                [list(range(len(w))) for w in words],
                [list(range(1, len(w) + 1)) for w in words],
            )
        else:
            w, s, e = pretokenize(tf.constant(texts))
            words, starts, ends = (
                [[x.decode("utf-8") for x in ws] for ws in w.to_list()],
                s.to_list(),
                e.to_list(),
            )
        predicted, scores = tagger(words)
        rows = []
        for text, ws, st, en, tg, sc in zip(texts, words, starts, ends, predicted, scores):
            entities = [
                {
                    "text": " ".join(ws[first:last])
                    if pretokenized
                    else text[st[first] : en[last - 1]],
                    "type": kind,
                    "start": st[first],
                    "end": en[last - 1],
                    "score": float(np.mean(sc[first:last])),
                }
                for kind, first, last in ner_tags.entities(tg)
            ]
            rows.append({"text": text, "entities": entities, "tokens": ws, "tags": tg})
        return rows

    def export(self, tagger, directory: Path) -> Path:
        """`saved_model/`: raw strings in, word tags and character offsets out."""

        return export_token_classifier(
            tagger.model, tagger.encoder, tagger.tags, directory, tagger.constrained
        )

    def format_report(
        self, report: dict
    ) -> str:  # recipes/engine/registry.py REPORT_FORMATS names it
        return ner_tags.format_entity_report(report)

    def format_prediction(self, row: dict) -> str:
        """The entities as `[text]/TYPE start:end score`."""
        found = "  ".join(
            f"[{e['text']}]/{e['type']} {e['start']}:{e['end']} {e['score']:.3f}"
            for e in row["entities"]
        )
        return f"{row['text']}\t{found or '-'}"

    def prediction_table(self, rows: list[dict]) -> tuple[list[str], list[list]]:
        """A CSV row per entity."""
        return (
            ["input", "entity", "type", "start", "end", "score"],
            [
                [row["text"], e["text"], e["type"], e["start"], e["end"], e["score"]]
                for row in rows
                for e in row["entities"]
            ],
        )


RECIPE = Ner()
