"""The NER recipe end to end on a tiny BERT: train, entity metrics against seqeval, windowing,
predict with character offsets, the exported SavedModel in a TensorFlow-only process, errors."""

import functools
import json
import operator
import subprocess
import sys

import numpy as np
import pytest

from tests.conftest import check_model_card, check_preset_export, make_ner_sentences, write_conll


@pytest.fixture(scope="module")
def trained(tiny_ner_bert, tmp_path_factory):
    """One in-process training run on generated CoNLL files, shared by the tests below. Windows of
    16 tokens: the long sentences (every 7th) are windowed."""
    from recipes import engine, ner

    work = tmp_path_factory.mktemp("ner")
    train = write_conll(
        work / "train.txt", make_ner_sentences(280, seed=1, long_every=7), docstart_every=20
    )
    valid = write_conll(work / "valid.txt", make_ner_sentences(50, seed=2, long_every=7))
    test = write_conll(work / "test.txt", make_ner_sentences(60, seed=3, long_every=5))
    cfg = ner.RECIPE.load_config(
        overrides=[
            f"model.backbone={tiny_ner_bert}",
            f"data.train={train}",
            f"data.validation={valid}",
            f"data.test={test}",
            "data.max_length=16",
            "train.epochs=6",
            "train.learning_rate=5e-3",
            "train.batch_size=16",
            f"run.runs_dir={work / 'runs'}",
            "run.name=tiny",
        ]
    )
    run, report = engine.train(ner.RECIPE, cfg, verbose=0)
    return work, run.path, report


def test_training_learns_entities_and_writes_the_run(trained):
    work, run, report = trained
    for name in [
        "config.yaml",
        "task.json",
        "history.csv",
        "metrics.json",
        "checkpoints/best.weights.h5",
        "export/model.keras",
        "export/saved_model/saved_model.pb",
        "tokenizer/tokenizer.json",
    ]:
        assert (run / name).exists(), name
    task = json.loads((run / "task.json").read_text())
    assert task["tags"] == ["O", "B-LOC", "I-LOC", "B-ORG", "I-ORG", "B-PER", "I-PER"]
    assert task["scheme"] == "IOB2" and task["case_feature"] == "segment"
    from recipes.ner.data import read_tagged
    from zoo.text_inputs import load_tokenizer

    tokenizer = load_tokenizer(str(run / "tokenizer"))
    subwords = [
        sum(len(tokenizer(w)) for w in s)
        for s in read_tagged(str(work / "train.txt"), "train").tokens
    ]
    # sentences that do not fit one window of 16 with [CLS], [SEP]
    longer = sum(n > 16 - 2 for n in subwords)
    # every 7th of 280 has 30 extra words
    assert longer >= 40 and task["windowed_train_sentences"] == longer
    assert task["sentences"] == {"train": 280, "validation": 50, "test": 60}
    # document context (mixed): neighbouring sentences may share windows, never across the 14
    # -DOCSTART- sections; each long one still has its own overlapping windows of 14 subwords, 7 apart.
    # (Windows of 14 subwords hold few of these 6-10-subword sentences: random sizes may pack none.)
    own = [1 + max(0, -(-(n - 14) // 7)) for n in subwords]
    long_windows = sum(k for k in own if k > 1)
    assert long_windows + 14 <= task["train_windows"] <= sum(own)
    assert report["test"]["f1"] >= 0.9, report["test"]
    assert report["test"]["windowed_sentences"] >= 12  # every 5th of 60 test sentences is long
    assert set(report["test"]["per_type"]) == {"LOC", "ORG", "PER"}
    history = (run / "history.csv").read_text().splitlines()
    # header + up to 6 epochs (early stopping)
    assert "val_entity_f1" in history[0] and 2 <= len(history) <= 7


def test_entity_metrics_equal_seqeval_on_the_recipes_own_predictions(trained):
    seqeval = pytest.importorskip("seqeval.metrics", reason="seqeval is a dev dependency")
    from recipes import engine, ner
    from recipes.ner import tags as ner_tags
    from recipes.ner.data import read_tagged
    from recipes.ner.token_inputs import Tagger

    work, run, _ = trained
    _, _, tagger = engine.open_finished(ner.RECIPE, run)
    test = read_tagged(str(work / "test.txt"), "test")
    predicted, _ = ner.tag_in_context(tagger, test, "mixed")  # each sentence beside its neighbours
    # windowed sentences merged back whole
    assert [len(p) for p in predicted] == [len(t) for t in test.tokens]
    report = json.loads((run / "metrics.json").read_text())["test"]
    assert report["f1"] == pytest.approx(seqeval.f1_score(test.tags, predicted), abs=5e-5)
    assert report["precision"] == pytest.approx(
        seqeval.precision_score(test.tags, predicted), abs=5e-5
    )
    assert report["recall"] == pytest.approx(seqeval.recall_score(test.tags, predicted), abs=5e-5)
    per_type = seqeval.classification_report(test.tags, predicted, output_dict=True)
    for entity_type, values in report["per_type"].items():
        assert values["f1"] == pytest.approx(per_type[entity_type]["f1-score"], abs=5e-5)
        assert values["support"] == per_type[entity_type]["support"]
    # `keras-zoo evaluate ner RUN --data test.txt`
    again = engine.evaluate(ner.RECIPE, run, str(work / "test.txt"), "test")
    assert again["f1"] == report["f1"] and again["true_entities"] == report["true_entities"]
    # The tiny model may be perfect; a copy with noise on its output layer is not, and both readings
    # of its (ill-formed, argmax-decoded) predictions must still agree.
    import keras

    noisy = keras.models.clone_model(tagger.model)
    noisy.set_weights(tagger.model.get_weights())
    kernel, bias = noisy.get_layer("logits").get_weights()
    rng = np.random.default_rng(0)
    noisy.get_layer("logits").set_weights(
        [kernel + rng.normal(0, 2 * kernel.std(), kernel.shape), bias]
    )
    wrong, _ = Tagger(noisy, tagger.encoder, tagger.tags, constrained=False)(test.tokens)
    ours = ner_tags.entity_report(test.tags, wrong)
    assert 0.05 < ours["f1"] < 0.95 and any(
        t.startswith("I-") and (i == 0 or s[i - 1] == "O") for s in wrong for i, t in enumerate(s)
    )
    assert ours["f1"] == pytest.approx(seqeval.f1_score(test.tags, wrong), abs=5e-5)
    assert ours["precision"] == pytest.approx(seqeval.precision_score(test.tags, wrong), abs=5e-5)
    assert ours["recall"] == pytest.approx(seqeval.recall_score(test.tags, wrong), abs=5e-5)


def test_predict_offsets_slice_the_original_text(trained):
    from recipes import engine, ner

    _, run, _ = trained
    texts = [
        "Anna  Smith visited Paris on monday.",
        "the talks in\tTokyo were led by Peter Novak of Acme Corp.",
        "Maria García 😀 visited Berlin,Cairo and Oslo!!",
        "  Shares of Blue Labs rose after Li Wei spoke .",
    ]
    rows = engine.predict(ner.RECIPE, run, texts)
    assert [r["text"] for r in rows] == texts
    found = {(e["text"], e["type"]) for r in rows for e in r["entities"]}
    for r in rows:
        for e in r["entities"]:
            assert r["text"][e["start"] : e["end"]] == e["text"]
            assert 0.0 < e["score"] <= 1.0
    assert {
        ("Anna  Smith", "PER"),
        ("Paris", "LOC"),
        ("Tokyo", "LOC"),
        ("Acme Corp", "ORG"),
    } <= found
    pre = engine.predict(ner.RECIPE, run, ["Anna Smith visited Paris ."], pretokenized=True)[0]
    assert [(e["text"], e["type"], e["start"], e["end"]) for e in pre["entities"]] == [
        ("Anna Smith", "PER", 0, 2),
        ("Paris", "LOC", 3, 4),
    ]


def test_exported_savedmodel_tags_like_keras_without_keras_zoo(trained):
    from recipes import engine, ner
    from recipes.ner.data import read_tagged

    work, run, _ = trained
    _, _, tagger = engine.open_finished(ner.RECIPE, run)
    test = read_tagged(str(work / "test.txt"), "test")
    keras_tags, _ = tagger(test.tokens)
    texts = [
        "Anna  Smith visited Paris on monday.",
        "Maria García 😀 visited Berlin,Cairo and Oslo!!",
        "...",
    ]
    keras_rows = engine.predict(ner.RECIPE, run, texts)
    (work / "tokens.json").write_text(json.dumps({"tokens": test.tokens, "texts": texts}))
    script = f"""
import json, sys
import tensorflow as tf, tensorflow_text  # noqa: F401
data = json.load(open({str(work / "tokens.json")!r}))
model = tf.saved_model.load({str(run / "export" / "saved_model")!r})
width = max(len(t) for t in data["tokens"])
tokens = tf.constant([t + [""] * (width - len(t)) for t in data["tokens"]])
out = model.signatures["tag_tokens"](tokens=tokens)
tags = [[t.decode() for t in row[:n]] for row, n in zip(out["tags"].numpy(), out["num_words"].numpy())]
raw = model.signatures["serving_default"](text=tf.constant(data["texts"]))
rows = [{{"words": [w.decode() for w in ws[:n]], "tags": [t.decode() for t in ts[:n]],
          "starts": s[:n].tolist(), "ends": e[:n].tolist()}}
        for ws, ts, s, e, n in zip(raw["words"].numpy(), raw["tags"].numpy(), raw["starts"].numpy(),
                                   raw["ends"].numpy(), raw["num_words"].numpy())]
loaded = sorted(m for m in ("keras_hub", "keras_nlp", "zoo", "recipes") if m in sys.modules)
print(json.dumps({{"tags": tags, "rows": rows, "loaded": loaded}}))
"""
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    served = json.loads(result.stdout.strip().splitlines()[-1])
    assert served["loaded"] == []
    assert served["tags"] == keras_tags
    for text, row, keras_row in zip(texts, served["rows"], keras_rows):
        assert row["tags"] == keras_row["tags"]
        assert (
            [text[s:e] for s, e in zip(row["starts"], row["ends"])]
            == row["words"]
            == keras_row["tokens"]
        )


def test_cli_predicts_entities_per_line_and_jsonl_and_evaluates(trained, capsys):
    from keras_zoo_cli.main import main

    work, run, report = trained
    assert main(["predict", "ner", str(run), "Anna Smith visited Paris.", "--jsonl"]) == 0
    row = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert [(e["text"], e["type"], e["start"], e["end"]) for e in row["entities"]] == [
        ("Anna Smith", "PER", 0, 10),
        ("Paris", "LOC", 19, 24),
    ]
    assert main(["predict", "ner", str(run), "Anna Smith visited Paris."]) == 0
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert line.startswith("Anna Smith visited Paris.\t[Anna Smith]/PER 0:10 ")
    assert (
        main(["evaluate", "ner", str(run), "--data", str(work / "test.txt"), "--split", "test"])
        == 0
    )
    table = capsys.readouterr().out
    assert "| PER |" in table and f"{report['test']['f1']:.4f}" in table
    assert main(["predict", "ner", str(run), "--file", str(work / "missing.txt")]) == 2
    assert (
        capsys.readouterr().err.strip()
        == f"keras-zoo: error: {work / 'missing.txt'}: file not found"
    )


def test_pretokenize_offsets_are_character_offsets_on_awkward_text():
    import tensorflow as tf

    from recipes.ner.token_inputs import pretokenize

    texts = ["Zoë  met\tJosé (Café\u0301) 😀!", "U.S.-based", "", "   "]
    words, starts, ends = pretokenize(tf.constant(texts))
    assert [[w.decode() for w in ws] for ws in words.to_list()] == [
        ["Zoë", "met", "José", "(", "Café\u0301", ")", "😀", "!"],
        ["U", ".", "S", ".", "-", "based"],
        [],
        [],
    ]
    for text, ws, ss, es in zip(texts, words.to_list(), starts.to_list(), ends.to_list()):
        assert [text[s:e] for s, e in zip(ss, es)] == [w.decode() for w in ws]


def test_long_sentences_are_windowed_and_merged_from_the_most_central_window(tiny_ner_bert):
    """A stand-in model whose output at each position is (token id, window length): the merged
    per-word output must give every word its own first subword's id, from a window that has
    context on both sides where the sentence allows."""
    import tensorflow as tf

    from recipes.ner.token_inputs import TokenEncoder
    from zoo.text_inputs import load_tokenizer

    # windows of 8 subwords, stride 4
    encoder = TokenEncoder(
        load_tokenizer(str(tiny_ner_bert)),
        ["token_ids", "segment_ids", "padding_mask"],
        max_length=10,
        case_feature="segment",
    )

    def model(inputs, training=False):
        ids = tf.cast(inputs["token_ids"], tf.float32)
        position = tf.broadcast_to(tf.range(tf.shape(ids)[1], dtype=tf.float32), tf.shape(ids))
        return tf.stack([ids, position, tf.cast(inputs["segment_ids"], tf.float32)], axis=-1)

    sentences = [
        [
            "the",
            "market",
            "was",
            "quiet",
            "and",
            "Anna",
            "Novak",
            "said",
            "prices",
            "rose",
            "a",
            "little",
            "as",
            "traders",
            "waited",
            "for",
            "news",
            "from",
            "Paris",
        ],
        ["Paris"],
    ]
    out = encoder.word_logits(model, tf.ragged.constant(sentences)).to_list()
    sub = encoder.subword_ids(tf.ragged.constant(sentences)).to_list()
    for words, word_ids, merged in zip(sentences, sub, out):
        assert len(merged) == len(words)
        assert [m[0] for m in merged] == [ids[0] for ids in word_ids]  # each word's first subword
        # capitalised -> segment 1
        assert [m[2] for m in merged] == [float(w[0].isupper()) for w in words]
    positions = [m[1] for m in out[0]]  # position inside its window (1 = right after [CLS])
    assert len(functools.reduce(operator.iadd, sub[0], [])) == 20 and max(positions) <= 8
    # middle words keep left context
    assert positions[0] == 1 and all(p >= 3 for p in positions[4:-3])
    # A sentence that fits one window is tagged in one window even when a batch-mate needs several.
    fits = ["the", "market", "was", "quiet", "and", "prices", "rose", "a"]  # 8 single-subword words
    together = encoder.word_logits(model, tf.ragged.constant([sentences[0], fits])).to_list()[1]
    alone = encoder.word_logits(model, tf.ragged.constant([fits])).to_list()[0]
    assert [m[1] for m in together] == [m[1] for m in alone] == [1, 2, 3, 4, 5, 6, 7, 8]
    # The length the tagger's batch plan expects a batch padded to is the one the model gets; a long
    # sentence adds its own windows (4 for 20 subwords) and only one for a batch-mate that fits.
    shapes = []

    def counting(inputs, training=False):
        shapes.append(tuple(inputs["token_ids"].shape))
        return model(inputs)

    for batch, expected in (
        ([sentences[0], fits], (5, 10)),
        ([fits], (1, 10)),
        ([["Paris"]], (1, 3)),
    ):
        encoder.word_logits(counting, tf.ragged.constant(batch))
        assert shapes[-1] == expected
        assert encoder.padded_lengths(encoder.subword_counts(batch).max()) == expected[1]


def test_constrained_decoding_never_starts_an_entity_with_i():
    import numpy as np
    import tensorflow as tf

    from recipes.ner.token_inputs import allowed_transitions, decode_tags

    tags = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]
    # I-LOC after PER is invalid
    probabilities = np.array(
        [
            [0.5, 0.05, 0.4, 0.0, 0.05],  # O wins, I-PER close
            [0.1, 0.3, 0.6, 0.0, 0.0],  # I-PER wins alone; after O it is invalid
            [0.2, 0.0, 0.0, 0.1, 0.7],
        ]
    )
    logits = tf.RaggedTensor.from_tensor(
        tf.math.log(tf.constant([probabilities + 1e-6], tf.float32))
    )
    greedy, _ = decode_tags(logits)
    constrained, scores = decode_tags(logits, allowed_transitions(tags))
    assert [tags[i] for i in greedy.to_list()[0]] == ["O", "I-PER", "I-LOC"]
    best = [tags[i] for i in constrained.to_list()[0]]
    # Valid paths: O B-PER O = 0.5*0.3*0.2 = 0.03 beats B-PER I-PER O = 0.006 and O B-PER B-LOC = 0.015.
    assert best == ["O", "B-PER", "O"]
    assert np.allclose(
        scores.to_list()[0],
        [probabilities[i, tags.index(t)] for i, t in enumerate(best)],
        atol=1e-4,
    )


def test_training_batches_are_cut_to_their_longest_window_and_see_every_window_once(tiny_ner_bert):
    import numpy as np
    import tensorflow as tf

    from recipes.ner.token_inputs import TokenEncoder, encode_windows, window_batches
    from tests.conftest import make_ner_sentences
    from zoo.text_inputs import load_tokenizer

    encoder = TokenEncoder(
        load_tokenizer(str(tiny_ner_bert)),
        ["token_ids", "segment_ids", "padding_mask"],
        max_length=24,
        case_feature="segment",
    )
    sentences = make_ner_sentences(45, seed=4, long_every=5)
    windows = encode_windows(
        encoder, [s for s, _ in sentences], [[0] * len(s) for s, _ in sentences]
    )
    # the shuffles' op seeds combine with the global seed, which other tests set
    tf.random.set_seed(0)
    ds, steps = window_batches(encoder, windows, batch_size=4, seed=0, group_batches=3)
    batches = list(ds)
    assert steps == len(batches) == -(-len(windows.lengths) // 4)
    ids = [x["token_ids"].numpy() for x, _, _ in batches]
    lengths = [x["padding_mask"].numpy().sum(axis=1) for x, _, _ in batches]
    for batch_ids, batch_lengths in zip(ids, lengths):
        assert batch_ids.shape[1] == batch_lengths.max()  # cut to this batch's longest window
    # every window once: the multiset of (length, first real token after [CLS]) matches
    seen = sorted(
        (int(n), int(row[1]))
        for batch_ids, batch_lengths in zip(ids, lengths)
        for row, n in zip(batch_ids, batch_lengths)
    )
    assert seen == sorted((int(n), int(row[1])) for row, n in zip(windows.ids, windows.lengths))
    for batch_lengths in lengths:  # groups of 3 batches are sorted longest first, so each batch is
        assert (np.diff(batch_lengths) <= 0).all()
    # ... and the batches then shuffled: unshuffled, the first group's 3 batches would be longest first
    assert np.diff([n.max() for n in lengths[:3]]).max() > 0


def test_the_run_has_a_model_card_with_the_per_type_table_and_test_figures(trained):
    _, run, _ = trained
    front = check_model_card(run)
    assert front["pipeline_tag"] == "token-classification"
    results = {
        r["dataset"]["split"]: r["dataset"]["name"] for r in front["model-index"][0]["results"]
    }
    assert results == {"validation": "valid.txt", "test": "test.txt"}
    # trained from Python, not the CLI
    assert "Python: recipes.engine.lifecycle.train" in (run / "README.md").read_text()


def test_a_preset_export_reloads_in_a_fresh_process_and_tags_as_the_run(trained, tmp_path):
    _, run, _ = trained
    # windowed
    texts = [
        "Anna Smith visited Paris on monday .",
        "Acme Corp hired Li Wei in Oslo .",
        " ".join(["the market was quiet"] * 8) + " and Maria Garcia spoke in Tokyo .",
    ]
    check_preset_export("ner", run, texts, tmp_path / "preset")
