"""Named-entity recognition (token classification) by fine-tuning a text backbone.

The story of a run: read tagged sentences (CoNLL, JSONL or TFDS; IOB1, IOB2 or BIOES, converted to
IOB2), load the backbone, split each word into subwords (the first subword carries the word's tag,
the others are left out of the loss), split sentences longer than the sequence length into
overlapping windows, fine-tune with length-bucketed batches, score entity F1 on validation after
every epoch (the best epoch is kept), evaluate, export.

    keras-zoo train ner --set data.train=train.txt --set data.validation=valid.txt
    keras-zoo predict ner runs/ner/NAME "Angela Merkel visited Paris."

From Python:

    >>> from recipes import ner
    >>> cfg = ner.load_config(overrides=["data.train=train.txt"])  # doctest: +SKIP
    >>> run, report = ner.train(cfg)  # doctest: +SKIP
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Sequence

import numpy as np

from recipes import config as config_lib
from recipes import ner_tags
from recipes.config import ModelConfig, RunConfig, TrainConfig, TuningConfig
from recipes.ner_data import TaggedSentences, check_known_tags, normalise_tags, read_tagged, tag_set
from recipes.run_dir import RunDir
from zoo.errors import UserError

NAME = "ner"


@dataclass
class NerDataConfig:
    train: str = ""  # a CoNLL file, a JSONL file (tokens + tags, or text + spans) or tfds:NAME
    validation: str = ""  # empty: carve `validation_split` of the training sentences
    test: str = ""
    token_column: int = 0  # CoNLL columns (0-based; negative counts from the end)
    tag_column: int = -1
    tag_scheme: Literal["auto", "IOB1", "IOB2", "BIOES"] = "auto"  # auto: detected from the training tags
    validation_split: float = 0.1
    # Subword tokens per window, start and end tokens included; longer sentences are split into
    # overlapping windows (and merged back at prediction), never truncated.
    max_length: int = 128


@dataclass
class NerModelConfig(ModelConfig):
    # Capitalisation, which uncased tokenizers lose: `segment` marks the subwords of capitalised words
    # with segment id 1 (BERT-style backbones); +1.9 CoNLL-2003 dev F1 after one epoch with MiniLM-L6
    # (a word-shape embedding beside the head's input instead: +0.0). `auto`: segment where the
    # backbone has segment ids.
    case_feature: Literal["auto", "segment", "none"] = "auto"
    # constrained: the most probable valid IOB2 tag sequence (Viterbi); argmax: each word's best tag.
    decoding: Literal["constrained", "argmax"] = "constrained"


@dataclass
class NerTrainConfig(TrainConfig):
    # CoNLL-2003, MiniLM-L6: 3 epochs test F1 88.7 in 23 min; 4 epochs 88.9 in 29 min (measured).
    epochs: int = 3
    monitor: str = "val_entity_f1"


@dataclass
class NerConfig:
    data: NerDataConfig = field(default_factory=NerDataConfig)
    model: NerModelConfig = field(default_factory=NerModelConfig)
    train: NerTrainConfig = field(default_factory=NerTrainConfig)
    run: RunConfig = field(default_factory=RunConfig)
    tuning: TuningConfig = field(default_factory=lambda: TuningConfig(objective="val_entity_f1", space={
        "train.learning_rate": {"min": 2e-5, "max": 3e-4, "sampling": "log"},
        "train.batch_size": [16, 32],
        "train.warmup_ratio": {"min": 0.0, "max": 0.2},
        "model.dropout": {"min": 0.0, "max": 0.3},
        "train.epochs": {"min": 2, "max": 5},
    }))


def load_config(path: str | Path | None = None, overrides: Sequence[str] = ()) -> NerConfig:
    return config_lib.load_config(NerConfig, path, overrides)


# ---------------------------------------------------------------------------------------------- data
@dataclass
class NerData:
    train: TaggedSentences
    validation: TaggedSentences
    test: TaggedSentences | None
    tags: list[str]  # the model's output tags (IOB2); a tag's index is its class id
    scheme: str  # the scheme the data was written in


def load_data(cfg: NerDataConfig, seed: int) -> NerData:
    if not cfg.train:
        raise UserError("data.train: no training data; set data.train=FILE (CoNLL or JSONL) or tfds:NAME")
    read = lambda source, split: read_tagged(source, split, cfg.token_column, cfg.tag_column)  # noqa: E731
    train = read(cfg.train, "train")
    scheme = normalise_tags(train, cfg.tag_scheme)
    if cfg.validation:
        validation = read(cfg.validation, "validation")
        normalise_tags(validation, scheme)
    else:
        train, validation = _split(train, cfg.validation_split, seed)
    test = None
    if cfg.test:
        test = read(cfg.test, "test")
        normalise_tags(test, scheme)
    tags = tag_set(train)
    if len(tags) < 3:
        raise UserError(f"{cfg.train}: no entities in the training data (every tag is O)")
    for split in (validation, test):
        if split is not None:
            check_known_tags(split, tags)
    return NerData(train, validation, test, tags, scheme)


def _split(data: TaggedSentences, fraction: float, seed: int) -> tuple[TaggedSentences, TaggedSentences]:
    if not 0 < fraction < 1:
        raise UserError(f"data.validation_split must be between 0 and 1, not {fraction}")
    order = np.random.default_rng(seed).permutation(len(data))
    held = set(order[: max(1, round(fraction * len(data)))].tolist())

    def subset(keep):
        return TaggedSentences([data.tokens[i] for i in keep], [data.tags[i] for i in keep],
                               [data.origins[i] for i in keep],
                               [data.token_origins[i] for i in keep] if data.token_origins else [])

    return subset([i for i in range(len(data)) if i not in held]), subset(sorted(held))


@dataclass
class Windows:
    """Training examples: subword ids with start/end tokens, per-subword tag ids (-1: not scored)
    and capitalisation flags, padded in arrays with the true lengths beside."""

    ids: np.ndarray
    labels: np.ndarray
    capitals: np.ndarray
    lengths: np.ndarray
    windowed_sentences: int  # sentences longer than one window


def encode_for_training(encoder, data: TaggedSentences, tags: list[str]) -> Windows:
    """Subwords and first-subword labels of every sentence, long sentences cut into the same
    overlapping windows that prediction uses."""
    import tensorflow as tf  # noqa: PLC0415

    from zoo.token_inputs import capitalised  # noqa: PLC0415

    tag_id = {t: i for i, t in enumerate(tags)}
    words = tf.ragged.constant(data.tokens, dtype=tf.string)
    sub = encoder.subword_ids(words)
    per_word = sub.row_lengths(axis=2).flat_values.numpy()
    flat_ids = sub.flat_values.numpy()
    capitals = capitalised(words.flat_values).numpy()
    word_splits = words.row_splits.numpy()
    subword_ends = np.cumsum(per_word)
    examples = []
    windowed = 0
    for s, sentence_tags in enumerate(data.tags):
        w0, w1 = word_splits[s], word_splits[s + 1]
        first, last = (subword_ends[w0 - 1] if w0 else 0), subword_ends[w1 - 1]
        ids = flat_ids[first:last]
        counts = per_word[w0:w1]
        labels = np.full(len(ids), -1, np.int32)
        labels[np.cumsum(counts) - counts] = [tag_id[t] for t in sentence_tags]
        sub_capitals = np.repeat(capitals[w0:w1], counts)
        starts = [0]
        if len(ids) > encoder.window:
            windowed += 1
            starts = [k * encoder.stride for k in range(1 + math.ceil((len(ids) - encoder.window) / encoder.stride))]
        for start in starts:
            end = start + encoder.window
            examples.append((np.concatenate([[encoder.start_id], ids[start:end], [encoder.end_id]]),
                             np.concatenate([[-1], labels[start:end], [-1]]),
                             np.concatenate([[0], sub_capitals[start:end], [0]])))
    lengths = np.array([len(e[0]) for e in examples], np.int32)
    width = int(lengths.max())

    def stack(k, fill):
        out = np.full((len(examples), width), fill, np.int32)
        for i, e in enumerate(examples):
            out[i, : len(e[k])] = e[k]
        return out

    return Windows(stack(0, encoder.pad_id), stack(1, -1), stack(2, 0), lengths, windowed)


def train_dataset(encoder, windows: Windows, batch_size: int, seed: int, steps: int):
    """Shuffled batches of windows of similar length, padded to the longest in the batch."""
    import tensorflow as tf  # noqa: PLC0415

    from zoo.text_inputs import bucket_lengths  # noqa: PLC0415

    boundaries = [b + 1 for b in bucket_lengths(encoder.max_length)][:-1]
    ds = tf.data.Dataset.from_tensor_slices((windows.ids, windows.labels, windows.capitals, windows.lengths))
    ds = ds.shuffle(len(windows.lengths), seed=seed, reshuffle_each_iteration=True)
    ds = ds.map(lambda ids, labels, capitals, n: (ids[:n], labels[:n], capitals[:n]))
    ds = ds.bucket_by_sequence_length(lambda ids, labels, capitals: tf.shape(ids)[0], bucket_boundaries=boundaries,
                                      bucket_batch_sizes=[batch_size] * (len(boundaries) + 1),
                                      padding_values=(encoder.pad_id, -1, 0))
    ds = ds.map(lambda ids, labels, capitals: (encoder.features(ids, capitals), labels),
                num_parallel_calls=tf.data.AUTOTUNE)
    return ds.apply(tf.data.experimental.assert_cardinality(steps)).prefetch(tf.data.AUTOTUNE)


class Tagger:
    """Word-level tags and their probabilities for sentences, batched by length, through the same
    graph code as the exported SavedModel (`TokenEncoder.word_logits`, `decode_tags`).

    `constrained` decoding picks the most probable tag sequence that is valid IOB2 (no `I-X` after
    `O` or another type) instead of each word's most probable tag.
    """

    def __init__(self, model, encoder, tags: Sequence[str], constrained: bool = True, batch_size: int = 64):
        import tensorflow as tf  # noqa: PLC0415

        from zoo.token_inputs import allowed_transitions, decode_tags  # noqa: PLC0415

        self.model, self.encoder, self.tags, self.constrained = model, encoder, list(tags), constrained
        self.batch_size = batch_size
        allowed = allowed_transitions(self.tags) if constrained else None
        self._decode = tf.function(lambda words: decode_tags(encoder.word_logits(model, words), allowed),
                                   input_signature=[tf.RaggedTensorSpec([None, None], tf.string, ragged_rank=1,
                                                                        row_splits_dtype=tf.int64)])

    def count_windowed(self, sentences: Sequence[Sequence[str]]) -> int:
        """How many sentences are longer than one window (and so are tagged in overlapping windows)."""
        import tensorflow as tf  # noqa: PLC0415

        sentences = [s for s in sentences if s]
        if not sentences:
            return 0
        sub = self.encoder.subword_ids(tf.ragged.constant(sentences, dtype=tf.string))
        return int(tf.reduce_sum(tf.cast(sub.merge_dims(1, 2).row_lengths() > self.encoder.window, tf.int32)))

    def __call__(self, sentences: Sequence[Sequence[str]]) -> tuple[list[list[str]], list[list[float]]]:
        import tensorflow as tf  # noqa: PLC0415

        order = np.argsort([sum(len(w) for w in s) for s in sentences], kind="stable")
        tags: list = [None] * len(sentences)
        scores: list = [None] * len(sentences)
        for i in range(0, len(order), self.batch_size):
            chunk = order[i : i + self.batch_size]
            batch = [list(sentences[j]) or [""] for j in chunk]  # an empty sentence: one empty word
            ids, probabilities = self._decode(tf.ragged.constant(batch, dtype=tf.string, row_splits_dtype=tf.int64))
            for j, row_ids, row_p in zip(chunk, ids.to_list(), probabilities.to_list()):
                n = len(sentences[j])
                tags[j] = [self.tags[k] for k in row_ids[:n]]
                scores[j] = row_p[:n]
        return tags, scores

    def entity_vectors(self, data: TaggedSentences, limit: int) -> tuple[np.ndarray, list[tuple[int, str, int, int]]]:
        """The vectors the head sees, averaged over each true entity's words, for the first `limit`
        entities: `(vectors [n, hidden], [(sentence, type, start, end)])`. For the embedding projector."""
        import tensorflow as tf  # noqa: PLC0415

        from zoo.heads import head_features  # noqa: PLC0415

        features = head_features(self.model)
        # word_logits reads each word's first-subword output of any per-token model, here the features;
        # a graph, as for tagging (eager, it took as long as tagging the whole CoNLL dev set).
        word_vectors = tf.function(lambda words: self.encoder.word_logits(features, words),
                                   input_signature=[tf.RaggedTensorSpec([None, None], tf.string, ragged_rank=1,
                                                                        row_splits_dtype=tf.int64)])
        spans = [(s, *e) for s, tags in enumerate(data.tags) for e in ner_tags.entities(tags)][:limit]
        needed = sorted({s for s, *_ in spans})
        by_sentence: dict[int, np.ndarray] = {}
        for i in range(0, len(needed), self.batch_size):
            chunk = needed[i : i + self.batch_size]
            words = tf.ragged.constant([data.tokens[s] for s in chunk], dtype=tf.string, row_splits_dtype=tf.int64)
            for s, vectors in zip(chunk, word_vectors(words)):
                by_sentence[s] = vectors.numpy()
        vectors = np.stack([by_sentence[s][start:end].mean(axis=0) for s, _, start, end in spans]) if spans else np.zeros((0, 0))
        return vectors, spans


def _entity_f1_callback(tagger: Tagger, validation: TaggedSentences):
    import keras  # noqa: PLC0415

    class EntityF1(keras.callbacks.Callback):
        """Adds validation entity precision/recall/F1 and token accuracy to the epoch logs."""

        def on_epoch_end(self, epoch, logs=None):
            if logs is None:
                return
            predicted, _ = tagger(validation.tokens)
            report = ner_tags.entity_report(validation.tags, predicted)
            logs.update({"val_entity_f1": report["f1"], "val_entity_precision": report["precision"],
                         "val_entity_recall": report["recall"], "val_token_accuracy": report["token_accuracy"]})

    return EntityF1()


# --------------------------------------------------------------------------------------------- model
def resolve_case_feature(setting: str, backbone) -> str:
    if setting == "auto":
        return "segment" if "segment_ids" in backbone.input else "none"
    if setting == "segment" and "segment_ids" not in backbone.input:
        raise UserError(f"model.case_feature: {type(backbone).__name__} has no segment ids; use 'none'")
    return setting


def build_model(cfg: NerModelConfig, backbone, num_tags: int):
    from zoo.heads import set_finetune_mode, token_classifier  # noqa: PLC0415

    set_finetune_mode(backbone, cfg.finetune, cfg.lora_rank)
    return token_classifier(backbone, num_tags, cfg.dropout)


def compile_tagger(model, cfg: TrainConfig, steps_per_epoch: int) -> None:
    import keras  # noqa: PLC0415

    from recipes import engine  # noqa: PLC0415

    # Subwords after a word's first, padding and start/end tokens carry label -1: not scored.
    model.compile(optimizer=engine.make_optimizer(cfg, steps_per_epoch),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True, ignore_class=-1),
                  jit_compile=cfg.jit_compile, run_eagerly=cfg.run_eagerly)


# ----------------------------------------------------------------------------------------- lifecycle
def train(cfg: NerConfig, overwrite: bool = False, resume: bool = False, verbose: int | str = "auto",
          export: bool = True) -> tuple[RunDir, dict]:
    """Fine-tune, evaluate on validation (and test), export; returns the run and its metrics."""
    from recipes import engine  # noqa: PLC0415
    from zoo.backbones import load_backbone  # noqa: PLC0415
    from zoo.heads import as_float32  # noqa: PLC0415
    from zoo.text_inputs import bucket_lengths  # noqa: PLC0415
    from zoo.token_inputs import TokenEncoder  # noqa: PLC0415

    run, cfg = engine.begin_run(NAME, cfg, load_config, overwrite, resume)
    data = load_data(cfg.data, cfg.train.seed)
    backbone, preprocessor = load_backbone(cfg.model.backbone, modality="text")
    case_feature = resolve_case_feature(cfg.model.case_feature, backbone)
    max_length = min(cfg.data.max_length, backbone.max_sequence_length)
    if max_length < 8:
        raise UserError(f"data.max_length: {cfg.data.max_length} is too short (at least 8)")
    engine.create_run(run, cfg, resume)
    encoder = TokenEncoder(preprocessor.tokenizer, list(backbone.input), max_length, case_feature)
    windows = encode_for_training(encoder, data.train, data.tags)
    run.write_json(run.task, {"tags": data.tags, "scheme": data.scheme, "max_length": max_length,
                              "case_feature": case_feature,
                              "sentences": {"train": len(data.train), "validation": len(data.validation),
                                            "test": len(data.test) if data.test else 0},
                              "windowed_train_sentences": windows.windowed_sentences})
    if windows.windowed_sentences:
        print(f"{windows.windowed_sentences} training sentences are longer than {max_length} tokens: "
              f"split into overlapping windows")
    preprocessor.tokenizer.save_to_preset(str(run.path / "tokenizer"))

    steps = engine.steps_for_buckets(windows.lengths, bucket_lengths(max_length), cfg.train.batch_size)
    train_ds = train_dataset(encoder, windows, cfg.train.batch_size, cfg.train.seed, steps)
    model = build_model(cfg.model, backbone, len(data.tags))
    compile_tagger(model, cfg.train, steps)
    constrained = cfg.model.decoding == "constrained"
    tagger = Tagger(model, encoder, data.tags, constrained)
    history = engine.fit(model, train_ds, None, cfg.train, run, len(data.train), verbose=verbose,
                         extra_callbacks=[_entity_f1_callback(tagger, data.validation)], logging=cfg.run)
    model = as_float32(model)

    step = len(history["epoch"])
    tagger = Tagger(model, encoder, data.tags, constrained)
    report = {"validation": evaluate_sentences(tagger, data.validation, run, "validation", step, cfg.run.embeddings)}
    if data.test is not None:
        report["test"] = evaluate_sentences(tagger, data.test, run, "test", step, cfg.run.embeddings)
    report["train_sentences_per_second"] = history.get("examples_per_second", [])
    engine.finish_run(run, cfg)
    if export:
        export_run(run, tagger)
    return run, report


def evaluate_sentences(tagger: Tagger, data: TaggedSentences, run: RunDir, split: str, step: int = 0,
                       embeddings: int = 0) -> dict:
    """Entity metrics (seqeval / conlleval) to metrics.json, and to TensorBoard with the per-type
    table, the entity-type confusion, the mistagged sentences and (up to `embeddings` of) the true
    entities' vectors in the projector."""
    from recipes import engine, summaries  # noqa: PLC0415

    predicted, _ = tagger(data.tokens)
    report = ner_tags.entity_report(data.tags, predicted)
    report["windowed_sentences"] = tagger.count_windowed(data.tokens)
    engine.write_report(run, split, report, step,
                        images={f"{split}/entity_type_confusion": ner_tags.type_confusion_png(report)},
                        text={f"{split}/entities": ner_tags.format_entity_report(report),
                              f"{split}/mistagged": mistagged_sentences(data, predicted)})
    if run.tensorboard and embeddings > 0:
        vectors, spans = tagger.entity_vectors(data, embeddings)
        if len(spans):
            found = [{(start, end): kind for kind, start, end in ner_tags.entities(predicted[s])} for s in range(len(data))]
            summaries.write_projector(engine.eval_logdir(run, split), f"{split} entities", vectors, {
                "type": [kind for _, kind, _, _ in spans],
                "predicted": [found[s].get((start, end), "O") for s, _, start, end in spans],
                "text": [" ".join(data.tokens[s][start:end]) for s, _, start, end in spans]})
    return report


def mistagged_sentences(data: TaggedSentences, predicted: Sequence[Sequence[str]], limit: int = 25) -> str:
    """Sentences whose predicted entities differ from the true ones, as a Markdown table of the
    sentence, its true and its predicted entities (`text (TYPE)`)."""
    from recipes.summaries import markdown_table  # noqa: PLC0415

    def spans(tokens, tags):
        return ", ".join(f"{' '.join(tokens[a:b])} ({kind})" for kind, a, b in ner_tags.entities(tags)) or "-"

    wrong = [i for i, (t, p) in enumerate(zip(data.tags, predicted)) if ner_tags.entities(t) != ner_tags.entities(p)]
    rows = [[" ".join(data.tokens[i]), spans(data.tokens[i], data.tags[i]), spans(data.tokens[i], predicted[i])]
            for i in wrong[:limit]]
    heading = f"{len(wrong)} of {len(data)} sentences with wrong entities" + (f"; the first {limit}:" if len(wrong) > limit else ":")
    return heading + "\n\n" + markdown_table(["sentence", "true entities", "predicted entities"], rows)


def load_run(path: str | Path) -> tuple[RunDir, NerConfig, Tagger]:
    """`(run, cfg, tagger)` of a finished run (the tagger holds the model, encoder and tags), for
    evaluate / predict / export."""
    from recipes import engine  # noqa: PLC0415
    from zoo.text_inputs import load_tokenizer  # noqa: PLC0415
    from zoo.token_inputs import TokenEncoder  # noqa: PLC0415

    run, cfg, task, model = engine.load_finished_run(path, load_config)
    tokenizer = load_tokenizer(str(run.path / "tokenizer"))
    encoder = TokenEncoder(tokenizer, list(model.input), task["max_length"], task["case_feature"])
    return run, cfg, Tagger(model, encoder, task["tags"], cfg.model.decoding == "constrained")


def evaluate(run_path: str | Path, source: str = "", split: str = "validation") -> dict:
    """Evaluate a finished run on `source` (default: the run's own validation data)."""
    run, cfg, tagger = load_run(run_path)
    if source:
        data = read_tagged(source, split, cfg.data.token_column, cfg.data.tag_column)
        normalise_tags(data, cfg.data.tag_scheme)
    else:
        data = getattr(load_data(cfg.data, cfg.train.seed), split)
        if data is None:
            raise UserError(f"{run.config}: the run has no {split} data; pass --data")
    check_known_tags(data, tagger.tags)
    return evaluate_sentences(tagger, data, run, f"evaluate_{split}", embeddings=cfg.run.embeddings)


def predict(run_path: str | Path, texts: Sequence[str], pretokenized: bool = False) -> list[dict]:
    """Entities in raw texts: `[{"text", "entities": [{"text", "type", "start", "end", "score"}]}]`.

    Offsets are character offsets into the text (`text[start:end]` is the entity). With
    `pretokenized`, each text is whitespace-separated tokens and offsets count tokens instead.
    """
    import tensorflow as tf  # noqa: PLC0415

    from zoo.token_inputs import pretokenize  # noqa: PLC0415

    _, _, tagger = load_run(run_path)
    texts = list(texts)
    if pretokenized:
        words = [t.split() for t in texts]
        starts, ends = [list(range(len(w))) for w in words], [list(range(1, len(w) + 1)) for w in words]
    else:
        w, s, e = pretokenize(tf.constant(texts)) if texts else ([], [], [])
        words = [[x.decode("utf-8") for x in ws] for ws in w.to_list()] if texts else []
        starts, ends = (s.to_list(), e.to_list()) if texts else ([], [])
    predicted, scores = tagger(words)
    rows = []
    for text, ws, st, en, tg, sc in zip(texts, words, starts, ends, predicted, scores):
        entities = []
        for entity_type, first, last in ner_tags.entities(tg):
            start, end = st[first], en[last - 1]
            entities.append({"text": " ".join(ws[first:last]) if pretokenized else text[start:end],
                             "type": entity_type, "start": start, "end": end,
                             "score": float(np.mean(sc[first:last]))})
        rows.append({"text": text, "entities": entities, "tokens": ws, "tags": tg})
    return rows


def format_report(report: dict) -> str:
    """The per-type entity table and the micro scores, for the CLI."""
    return ner_tags.format_entity_report(report)


def format_prediction(row: dict) -> str:
    """One line per input for the CLI: the entities as `text/TYPE` with their offsets."""
    found = "  ".join(f"[{e['text']}]/{e['type']} {e['start']}:{e['end']} {e['score']:.3f}" for e in row["entities"])
    return f"{row['text']}\t{found or '-'}"


def export_run(run: RunDir, tagger: Tagger | None = None) -> Path:
    """Write `export/model.keras` and `export/saved_model` (raw strings in, word tags and offsets out)."""
    from zoo.export import export_token_classifier  # noqa: PLC0415

    if tagger is None:
        run, _, tagger = load_run(run.path)
    else:
        tagger.model.save(str(run.keras_model))
    return export_token_classifier(tagger.model, tagger.encoder, tagger.tags, run.export, tagger.constrained)


def main(argv: Sequence[str] | None = None) -> int:
    from recipes.cli import main as cli_main  # noqa: PLC0415

    return cli_main(argv, recipe=NAME)


if __name__ == "__main__":
    raise SystemExit(main())
