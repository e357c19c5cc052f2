"""The sentiment recipe end to end on a tiny BERT: train, metrics, predict, evaluate, export, errors."""

import csv
import json
import subprocess
import sys
import time

import numpy as np
import pytest

from tests.conftest import (
    FILLER,
    ROOT,
    check_model_card,
    check_preset_export,
    cli,
    cli_here,
    make_reviews,
    write_jsonl,
)


@pytest.fixture(scope="module")
def trained(tiny_bert, tmp_path_factory):
    """One CLI training run on generated reviews, shared by the tests below."""
    work = tmp_path_factory.mktemp("sentiment")
    train = write_jsonl(work / "train.jsonl", make_reviews(240, seed=1))
    dev = write_jsonl(work / "dev.jsonl", make_reviews(60, seed=2))
    result = cli_here(
        "train",
        "sentiment",
        "--name",
        "tiny",
        "--runs-dir",
        str(work / "runs"),
        "--set",
        f"model.backbone={tiny_bert}",
        "--set",
        f"data.train={train}",
        "--set",
        f"data.validation={dev}",
        "--set",
        "data.selection_split=0.2",
        "--set",
        "train.epochs=4",
        "--set",
        "train.learning_rate=3e-3",
        "--set",
        "train.batch_size=16",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return work, work / "runs" / "sentiment" / "tiny", result.stdout


def test_training_learns_and_writes_the_run_directory(trained):
    _work, run, stdout = trained
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
    assert not (run / "backup").exists()  # BackupAndRestore state is removed once training finished
    metrics = json.loads((run / "metrics.json").read_text())["validation"]
    assert metrics["accuracy"] >= 0.9  # one sentiment word decides the label: easy to learn
    cm = np.array(metrics["confusion_matrix"])
    assert cm.sum() == 60 and np.trace(cm) / 60 == pytest.approx(metrics["accuracy"])
    assert metrics["labels"] == ["negative", "positive"]
    assert "validation metrics" in stdout and f"keras-zoo tensorboard {run}" in stdout
    task = json.loads((run / "task.json").read_text())
    assert 8 <= task["max_length"] <= 16  # picked from the data: generated reviews are short
    # the tiny backbone's limit: evaluation and prediction read that far
    assert task["read_length"] == 64


def test_prediction_reads_texts_past_the_training_length(trained):
    _, run, _ = trained
    from recipes import engine, sentiment

    task = json.loads((run / "task.json").read_text())
    expected = ["positive", "negative"] * 3
    texts = [
        " ".join(FILLER + FILLER[:6] + [w])
        for w in ["great", "awful", "superb", "dull", "fun", "bad"]
    ]
    # the sentiment word lies past the training length
    assert len(texts[0].split()) + 2 > task["max_length"]
    assert [r["label"] for r in engine.predict(sentiment.RECIPE, run, texts)] == expected


def test_the_epoch_is_chosen_on_the_selection_split_and_the_last_epoch_is_reported_beside_it(
    trained,
):
    _work, run, _ = trained
    metrics = json.loads((run / "metrics.json").read_text())
    chosen = metrics["chosen_epoch"]
    assert chosen["chosen_on"] == "selection" and chosen["monitor"] == "val_accuracy"
    with open(run / "history.csv") as f:
        rows = list(csv.DictReader(f))
    scores = [float(r["val_accuracy"]) for r in rows]
    assert chosen["of"] == len(rows) and scores[chosen["epoch"] - 1] == max(scores)
    # The epoch was scored on the 48 held-out training reviews (20% of 240), not on the 60 dev ones.
    assert all(abs(s * 48 - round(s * 48)) < 1e-4 for s in scores)
    last = metrics["last_epoch"]
    assert last["epoch"] == len(rows) and 0 <= last["validation"]["accuracy"] <= 1
    assert not (run / "checkpoints" / "last.weights.h5").exists()


def test_metrics_match_an_independent_recount_of_predictions(trained):
    work, run, _ = trained
    from recipes import engine, sentiment

    dev = [json.loads(line) for line in (work / "dev.jsonl").read_text().splitlines()]
    rows = engine.predict(sentiment.RECIPE, run, [r["text"] for r in dev])
    gold = np.array([r["label"] for r in dev])
    predicted = np.array([r["label"] for r in rows])
    report = json.loads((run / "metrics.json").read_text())["validation"]
    assert report["accuracy"] == pytest.approx((gold == predicted).mean())
    f1s = []
    for name in ("negative", "positive"):
        tp = ((gold == name) & (predicted == name)).sum()
        precision, recall = tp / max((predicted == name).sum(), 1), tp / (gold == name).sum()
        f1s.append(0 if tp == 0 else 2 * precision * recall / (precision + recall))
        assert report["per_class"][name]["recall"] == pytest.approx(recall)
    assert report["macro_f1"] == pytest.approx(np.mean(f1s))
    for row in rows:
        assert sum(row["probabilities"].values()) == pytest.approx(1, abs=1e-5)


def test_tensorboard_logs_curves_and_the_confusion_matrix(trained):
    _, run, _ = trained
    import tensorflow as tf
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    train_events = EventAccumulator(
        str(run / "logs" / "train"), size_guidance={"tensors": 0}
    ).Reload()
    assert {
        "epoch_loss",
        "epoch_accuracy",
        "epoch_learning_rate",
        "epoch_examples_per_second",
    } <= set(train_events.Tags()["tensors"])
    assert len(train_events.Tensors("epoch_loss")) == 4  # one point per epoch
    eval_events = EventAccumulator(
        str(run / "logs" / "eval_validation"), size_guidance={"tensors": 0}
    ).Reload()
    tags = set(eval_events.Tags()["tensors"])
    assert {"validation/confusion_matrix", "validation/report", "eval/accuracy"} <= tags
    accuracy = float(tf.make_ndarray(eval_events.Tensors("eval/accuracy")[-1].tensor_proto))
    metrics = json.loads((run / "metrics.json").read_text())["validation"]
    assert accuracy == pytest.approx(metrics["accuracy"], abs=1e-6)


def test_predict_cli_prints_labels_with_probabilities(trained):
    _, run, _ = trained
    code, out, err = cli(
        "predict",
        "sentiment",
        str(run),
        "the film was great and fun",
        "boring dull plot",
        "--jsonl",
    )
    assert code == 0, err[-2000:]
    rows = [json.loads(line) for line in out.splitlines()]
    assert [r["label"] for r in rows] == ["positive", "negative"]
    assert all(r["probabilities"][r["label"]] > 0.5 for r in rows)


def test_exported_saved_model_serves_the_same_probabilities_without_keras_zoo(trained):
    work, run, _ = trained
    from recipes import engine, sentiment

    dev = [json.loads(line)["text"] for line in (work / "dev.jsonl").read_text().splitlines()]
    expected = np.array(
        [
            [r["probabilities"][k] for k in ("negative", "positive")]
            for r in engine.predict(sentiment.RECIPE, run, dev)
        ]
    )
    script = (
        "import json, sys, numpy as np, tensorflow as tf, tensorflow_text\n"
        f"texts = json.loads(sys.stdin.read())\n"
        f"serve = tf.saved_model.load({str(run / 'export' / 'saved_model')!r}).signatures['serving_default']\n"
        "out = serve(text=tf.constant(texts))\n"
        "assert not any(m.split('.')[0] in ('keras_hub', 'keras_nlp', 'zoo', 'recipes') for m in sys.modules)\n"
        "print(json.dumps({'p': out['probabilities'].numpy().tolist(),\n"
        "                  'label': [s.decode() for s in out['label'].numpy()]}))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        input=json.dumps(dev),
        capture_output=True,
        text=True,
        timeout=300,
        cwd="/",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    served = json.loads(result.stdout.splitlines()[-1])
    assert np.abs(np.array(served["p"]) - expected).max() < 1e-4
    assert served["label"] == [["negative", "positive"][i] for i in expected.argmax(axis=1)]


def test_export_cli_rewrites_the_export_from_the_saved_model(trained):
    _, run, _ = trained
    (run / "export" / "saved_model" / "saved_model.pb").unlink()
    code, out, err = cli("export", "sentiment", str(run))
    assert code == 0, err[-2000:]
    assert f"exported: {run}/export/saved_model" in out
    assert (run / "export" / "saved_model" / "saved_model.pb").exists()


def test_evaluate_cli_and_an_unseen_label(trained, tmp_path):
    _, run, _ = trained
    code, out, err = cli("evaluate", "sentiment", str(run))
    assert code == 0, err[-2000:]
    accuracy = json.loads((run / "metrics.json").read_text())["validation"]["accuracy"]
    assert f"accuracy {accuracy:.4f}, macro-F1" in out  # the same model on the same data
    bad = write_jsonl(
        tmp_path / "other.jsonl",
        [{"text": "fine", "label": "positive"}, {"text": "so so", "label": "neutral"}],
    )
    code, _, err = cli("evaluate", "sentiment", str(run), "--data", str(bad))
    assert code == 2 and "Traceback" not in err
    assert [line for line in err.splitlines() if line.startswith("keras-zoo")] == [
        f"keras-zoo: error: {bad}:2: label 'neutral' was never seen in training (labels: negative, positive)"
    ]


def test_an_existing_run_is_never_overwritten_without_the_flag(trained):
    work, run, _ = trained
    before = (run / "metrics.json").read_text()
    result = cli_here("train", "sentiment", "--name", "tiny", "--runs-dir", str(work / "runs"))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "a finished run of this name is there; --overwrite replaces it" in result.stderr
    assert (run / "metrics.json").read_text() == before


@pytest.mark.parametrize(
    "args, message",
    [
        (["--set", "data.train=/nonexistent/train.csv"], "/nonexistent/train.csv: file not found"),
        (
            ["--set", "train.learnig_rate=1"],
            "unknown config key 'train.learnig_rate' (did you mean 'train.learning_rate'?)",
        ),
        (
            [
                "--set",
                f"data.train={ROOT / 'recipes/common/demo_data/sentiment_train.jsonl'}",
                "--set",
                "data.text_column=review",
            ],
            "sentiment_train.jsonl:1: no column 'review'",
        ),
        (
            ["--set", "model.backbone=minilm-l5"],
            "unknown backbone 'minilm-l5' (did you mean 'minilm-l6'",
        ),
        (["--set", "run.log_every_steps=-5"], "run.log_every_steps: must be at least 0, not -5"),
    ],
)
def test_bad_input_is_one_line_with_non_zero_exit(tmp_path, args, message):
    code, _, err = cli("train", "sentiment", "--runs-dir", str(tmp_path), *args)
    assert code == 2
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith("keras-zoo: error:")]
    assert len(lines) == 1 and message in lines[0], err[-2000:]
    # no half-made run
    assert not (tmp_path / "sentiment").exists() or not any((tmp_path / "sentiment").iterdir())


def test_help_answers_fast_without_importing_tensorflow():
    code = (
        "import sys, time; t = time.time()\n"
        "from keras_zoo_cli.main import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        "assert 'tensorflow' not in sys.modules and 'keras' not in sys.modules\n"
        "print(time.time() - t)"
    )
    start = time.time()
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    assert float(result.stdout.splitlines()[-1]) < 0.5 and time.time() - start < 5
    listing = cli_here("list")
    assert listing.returncode == 0 and "efficientnet-lite0" in listing.stdout


def test_the_recipe_module_is_runnable_as_a_script():
    result = subprocess.run(
        [sys.executable, "-m", "recipes.sentiment", "train", "--help"],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert result.returncode == 0 and "usage: python -m recipes.sentiment train" in result.stdout


def test_the_run_and_its_export_have_a_model_card_whose_figures_are_its_metrics(trained):
    work, run, _ = trained
    front = check_model_card(run)
    # a local backbone
    assert front["pipeline_tag"] == "text-classification" and front["license"] == "other"
    card = (run / "README.md").read_text()
    assert "keras-zoo train sentiment --name tiny --runs-dir" in card  # the command that made it
    assert "chosen by the best `val_accuracy` on the selection split" in card
    assert (run / "export" / "README.md").read_text() == card
    data = json.loads((run / "data.json").read_text())
    assert data["selection"]["source"] == data["train"]["source"] == str(work / "train.jsonl")
    assert data["selection"]["part_of_train"] and not data["validation"]["part_of_train"]
    assert data["train"]["examples"] + data["selection"]["examples"] == 240
    assert (run / "export" / "curves.png").exists()


def test_a_preset_export_reloads_in_a_fresh_process_and_predicts_as_the_run(trained, tmp_path):
    work, run, _ = trained
    dev = [json.loads(line)["text"] for line in (work / "dev.jsonl").read_text().splitlines()]
    check_preset_export("sentiment", run, dev[:24], tmp_path / "preset")
