"""The NER recipe end to end on a tiny BERT: train, entity metrics against seqeval, windowing,
predict with character offsets, the exported SavedModel in a TensorFlow-only process, errors."""

import json
import subprocess
import sys

import numpy as np
import pytest

from tests.conftest import ROOT, make_ner_sentences, run_cli, write_conll


@pytest.fixture(scope="module")
def trained(tiny_ner_bert, tmp_path_factory):
    """One in-process training run on generated CoNLL files, shared by the tests below. Windows of
    16 tokens: the long sentences (every 7th) are windowed."""
    from recipes import ner

    work = tmp_path_factory.mktemp("ner")
    train = write_conll(work / "train.txt", make_ner_sentences(280, seed=1, long_every=7), docstart_every=20)
    valid = write_conll(work / "valid.txt", make_ner_sentences(50, seed=2, long_every=7))
    test = write_conll(work / "test.txt", make_ner_sentences(60, seed=3, long_every=5))
    cfg = ner.load_config(overrides=[
        f"model.backbone={tiny_ner_bert}", f"data.train={train}", f"data.validation={valid}", f"data.test={test}",
        "data.max_length=16", "train.epochs=6", "train.learning_rate=5e-3", "train.batch_size=16",
        f"run.runs_dir={work / 'runs'}", "run.name=tiny"])
    run, report = ner.train(cfg, verbose=0)
    return work, run.path, report


def test_training_learns_entities_and_writes_the_run(trained):
    work, run, report = trained
    for name in ["config.yaml", "task.json", "history.csv", "metrics.json", "checkpoints/best.weights.h5",
                 "export/model.keras", "export/saved_model/saved_model.pb", "tokenizer/tokenizer.json"]:
        assert (run / name).exists(), name
    task = json.loads((run / "task.json").read_text())
    assert task["tags"] == ["O", "B-LOC", "I-LOC", "B-ORG", "I-ORG", "B-PER", "I-PER"]
    assert task["scheme"] == "IOB2" and task["case_feature"] == "segment"
    from recipes.ner_data import read_tagged
    from zoo.text_inputs import load_tokenizer

    tokenizer = load_tokenizer(str(run / "tokenizer"))
    subwords = [sum(len(tokenizer(w)) for w in s) for s in read_tagged(str(work / "train.txt"), "train").tokens]
    longer = sum(n > 16 - 2 for n in subwords)  # sentences that do not fit one window of 16 with [CLS], [SEP]
    assert longer >= 40 and task["windowed_train_sentences"] == longer  # every 7th of 280 has 30 extra words
    assert task["sentences"] == {"train": 280, "validation": 50, "test": 60}
    assert report["test"]["f1"] >= 0.9, report["test"]
    assert set(report["test"]["per_type"]) == {"LOC", "ORG", "PER"}
    history = (run / "history.csv").read_text().splitlines()
    assert "val_entity_f1" in history[0] and 2 <= len(history) <= 7  # header + up to 6 epochs (early stopping)


def test_entity_metrics_equal_seqeval_on_the_recipes_own_predictions(trained):
    seqeval = pytest.importorskip("seqeval.metrics", reason="seqeval is a dev dependency")
    from recipes import ner
    from recipes.ner_data import read_tagged

    work, run, _ = trained
    _, _, tagger = ner.load_run(run)
    test = read_tagged(str(work / "test.txt"), "test")
    predicted, _ = tagger(test.tokens)
    assert [len(p) for p in predicted] == [len(t) for t in test.tokens]  # windowed sentences merged back whole
    report = json.loads((run / "metrics.json").read_text())["test"]
    assert report["f1"] == pytest.approx(seqeval.f1_score(test.tags, predicted), abs=5e-5)
    assert report["precision"] == pytest.approx(seqeval.precision_score(test.tags, predicted), abs=5e-5)
    assert report["recall"] == pytest.approx(seqeval.recall_score(test.tags, predicted), abs=5e-5)
    per_type = seqeval.classification_report(test.tags, predicted, output_dict=True)
    for entity_type, values in report["per_type"].items():
        assert values["f1"] == pytest.approx(per_type[entity_type]["f1-score"], abs=5e-5)
        assert values["support"] == per_type[entity_type]["support"]
    # Not a trivially perfect model: some tags differ somewhere, or the score is exactly 1.
    assert 0.0 < report["f1"] <= 1.0


def test_predict_offsets_slice_the_original_text(trained):
    from recipes import ner

    _, run, _ = trained
    texts = ["Anna  Smith visited Paris on monday.",
             "the talks in\tTokyo were led by Peter Novak of Acme Corp.",
             "Maria García 😀 visited Berlin,Cairo and Oslo!!",
             "  Shares of Blue Labs rose after Li Wei spoke ."]
    rows = ner.predict(run, texts)
    assert [r["text"] for r in rows] == texts
    found = {(e["text"], e["type"]) for r in rows for e in r["entities"]}
    for r in rows:
        for e in r["entities"]:
            assert r["text"][e["start"]:e["end"]] == e["text"]
            assert 0.0 < e["score"] <= 1.0
    assert {("Anna  Smith", "PER"), ("Paris", "LOC"), ("Tokyo", "LOC"), ("Acme Corp", "ORG")} <= found
    pre = ner.predict(run, ["Anna Smith visited Paris ."], pretokenized=True)[0]
    assert [(e["text"], e["type"], e["start"], e["end"]) for e in pre["entities"]] == \
        [("Anna Smith", "PER", 0, 2), ("Paris", "LOC", 3, 4)]


def test_exported_savedmodel_tags_like_keras_without_keras_zoo(trained):
    from recipes import ner
    from recipes.ner_data import read_tagged

    work, run, _ = trained
    _, _, tagger = ner.load_run(run)
    test = read_tagged(str(work / "test.txt"), "test")
    keras_tags, _ = tagger(test.tokens)
    texts = ["Anna  Smith visited Paris on monday.", "Maria García 😀 visited Berlin,Cairo and Oslo!!", ""]
    keras_rows = ner.predict(run, texts)
    (work / "tokens.json").write_text(json.dumps({"tokens": test.tokens, "texts": texts}))
    script = f"""
import json, sys
import tensorflow as tf, tensorflow_text  # noqa: F401
data = json.load(open({str(work / 'tokens.json')!r}))
model = tf.saved_model.load({str(run / 'export' / 'saved_model')!r})
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
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    served = json.loads(result.stdout.strip().splitlines()[-1])
    assert served["loaded"] == []
    assert served["tags"] == keras_tags
    for text, row, keras_row in zip(texts, served["rows"], keras_rows):
        assert row["tags"] == keras_row["tags"]
        assert [text[s:e] for s, e in zip(row["starts"], row["ends"])] == row["words"] == keras_row["tokens"]


def test_cli_predicts_entities_per_line_and_jsonl(trained):
    _, run, _ = trained
    result = run_cli("predict", "ner", str(run), "Anna Smith visited Paris.", "--jsonl")
    assert result.returncode == 0, result.stderr[-2000:]
    row = json.loads(result.stdout.strip().splitlines()[-1])
    assert [(e["text"], e["type"]) for e in row["entities"]] == [("Anna Smith", "PER"), ("Paris", "LOC")]
