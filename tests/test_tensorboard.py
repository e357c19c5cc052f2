"""What a run shows in TensorBoard, checked through a real TensorBoard server's HTTP API (and
headless Chromium screenshots): one short training run per recipe, all in one runs directory."""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import (
    ROOT,
    make_image_folder,
    make_ner_sentences,
    make_reviews,
    write_conll,
    write_jsonl,
)
from tests.tensorboard_server import hparams_sessions, scalars, screenshot, serve_tensorboard

EVERY = 2  # run.log_every_steps in these runs
EMBEDDINGS = 30  # run.embeddings: fewer than the sentiment validation set, to check the cap


def train_recipes(
    work: Path, tiny_bert: Path, tiny_image_backbone: Path, tiny_ner_bert: Path
) -> dict[str, Path]:
    """One short run of each recipe into `work/runs`, in-process and eager (no graph tracing)."""
    from recipes import engine, image_classification, ner, sentiment

    common = [
        f"run.runs_dir={work / 'runs'}",
        "run.name=tiny",
        "train.run_eagerly=true",
        f"run.log_every_steps={EVERY}",
        f"run.embeddings={EMBEDDINGS}",
    ]
    dev = make_reviews(40, seed=2)
    # wrong labels: some validation texts are misclassified whatever the model learns
    for row in dev[:4]:
        row["label"] = "positive" if row["label"] == "negative" else "negative"
    cfg = sentiment.RECIPE.load_config(
        overrides=common
        + [
            f"model.backbone={tiny_bert}",
            f"data.train={write_jsonl(work / 'train.jsonl', make_reviews(96, seed=1))}",
            f"data.validation={write_jsonl(work / 'dev.jsonl', dev)}",
            "train.epochs=1",
            "train.batch_size=16",
            "train.learning_rate=3e-3",
            "run.profile=true",
        ]
    )
    runs = {"sentiment": engine.train(sentiment.RECIPE, cfg, verbose=0, export=False)[0].path}

    images = make_image_folder(work / "images", per_class=8)
    val = make_image_folder(work / "images_val", per_class=4, seed=1)
    shutil.move(val / "red" / "red_0.png", val / "blue" / "red_0.png")  # a red image labelled blue
    cfg = image_classification.RECIPE.load_config(
        overrides=common
        + [
            f"model.backbone={tiny_image_backbone}",
            f"data.train={images}",
            f"data.validation={val}",
            "train.head_epochs=1",
            "train.epochs=1",
            "train.batch_size=4",
        ]
    )
    runs["image_classification"] = engine.train(
        image_classification.RECIPE, cfg, verbose=0, export=False
    )[0].path

    sentences = make_ner_sentences(48, seed=3)
    cfg = ner.RECIPE.load_config(
        overrides=common
        + [
            f"model.backbone={tiny_ner_bert}",
            f"data.train={write_conll(work / 'train.conll', sentences[:36])}",
            f"data.validation={write_conll(work / 'dev.conll', sentences[36:])}",
            "train.epochs=1",
            "train.batch_size=8",
            "train.learning_rate=3e-3",
        ]
    )
    runs["ner"] = engine.train(ner.RECIPE, cfg, verbose=0, export=False)[0].path
    return runs


@pytest.fixture(scope="module")
def board(tiny_bert, tiny_image_backbone, tiny_ner_bert, tmp_path_factory):
    work = tmp_path_factory.mktemp("board")
    runs = train_recipes(work, tiny_bert, tiny_image_backbone, tiny_ner_bert)
    expected = {
        f"{recipe}/tiny/logs/{sub}"
        for recipe in runs
        for sub in ("train", "validation", "eval_validation")
    }

    def ready(server) -> bool:
        return expected <= set(server.get_json("/data/runs"))

    with serve_tensorboard(work / "runs", ready=ready) as server:
        yield server, runs, work


def history(run: Path) -> list[dict]:
    with open(run / "history.csv") as f:
        return list(csv.DictReader(f))


def report(run: Path, split: str = "validation") -> dict:
    return json.loads((run / "metrics.json").read_text())[split]


def tb_run(run: Path, sub: str) -> str:
    """The TensorBoard run name of a run's log folder, e.g. `sentiment/tiny/logs/train`."""
    return f"{run.parent.name}/{run.name}/logs" + (f"/{sub}" if sub else "")


@pytest.mark.parametrize("recipe", ["sentiment", "image_classification", "ner"])
def test_epoch_curves_and_step_loss_are_served_with_the_history_values(board, recipe):
    server, runs, _ = board
    run = runs[recipe]
    rows = history(run)
    tags = server.get_json("/data/plugin/scalars/tags")
    train_tags = set(tags[tb_run(run, "train")])
    assert {
        "epoch_loss",
        "epoch_learning_rate",
        "epoch_examples_per_second",
        "batch_loss",
    } <= train_tags
    for key in ("loss", "learning_rate", "examples_per_second"):
        served = scalars(server, tb_run(run, "train"), f"epoch_{key}")
        assert [step for step, _ in served] == list(range(len(rows)))
        np.testing.assert_allclose([v for _, v in served], [float(r[key]) for r in rows], rtol=1e-5)
    validation_keys = [k[4:] for k in rows[0] if k.startswith("val_")]
    assert validation_keys, rows[0]
    for key in validation_keys:
        served = scalars(server, tb_run(run, "validation"), f"epoch_{key}")
        np.testing.assert_allclose(
            [v for _, v in served], [float(r["val_" + key]) for r in rows], rtol=1e-5
        )
    # The loss every EVERY steps, numbered on across epochs and training phases (image: head, then fine-tuning).
    steps = [step for step, _ in scalars(server, tb_run(run, "train"), "batch_loss")]
    assert steps == sorted(set(steps)) and all(step % EVERY == 0 for step in steps)
    if recipe == "image_classification":  # 2 phases of 1 epoch, 16 images in batches of 4
        assert steps == list(range(EVERY, 8 + 1, EVERY))


@pytest.mark.parametrize("recipe", ["sentiment", "image_classification", "ner"])
def test_final_evaluation_scalars_report_and_config_text_match_the_metrics_json(board, recipe):
    server, runs, _ = board
    run = runs[recipe]
    metrics = report(run)
    evaluation = tb_run(run, "eval_validation")
    key = "f1" if recipe == "ner" else "accuracy"
    ((_, served),) = scalars(server, evaluation, f"eval/{key}")
    assert served == pytest.approx(metrics[key], abs=1e-6)
    texts = server.get_json("/data/plugin/text/tags")
    table_tag = "validation/entities" if recipe == "ner" else "validation/report"
    assert table_tag in texts[evaluation]
    (table,) = server.get_json("/data/plugin/text/text", run=evaluation, tag=table_tag)
    classes = metrics["per_type"] if recipe == "ner" else metrics["per_class"]
    for name, values in classes.items():
        assert f"{name}</td>" in table["text"] and f"{values['f1']:.4f}" in table["text"]
    (config,) = server.get_json("/data/plugin/text/text", run=tb_run(run, ""), tag="config")
    assert "learning_rate:" in config["text"] and str(run.parent.parent.parent) in config["text"]


def test_misclassified_examples_are_served_as_text_and_an_image_grid(board):
    server, runs, _ = board
    from PIL import Image

    metrics = report(runs["sentiment"])
    wrong = metrics["num_examples"] - int(np.trace(metrics["confusion_matrix"]))
    assert wrong >= 1  # four validation labels are flipped
    (text,) = server.get_json(
        "/data/plugin/text/text",
        run=tb_run(runs["sentiment"], "eval_validation"),
        tag="validation/misclassified",
    )
    assert f"{wrong} of {metrics['num_examples']} misclassified" in text["text"]
    assert text["text"].count("<tr>") == min(wrong, 25) + 1  # header + a row per mistake

    ner_metrics = report(runs["ner"])
    (text,) = server.get_json(
        "/data/plugin/text/text",
        run=tb_run(runs["ner"], "eval_validation"),
        tag="validation/mistagged",
    )
    if ner_metrics["correct_entities"] < ner_metrics["true_entities"]:
        assert "sentences with wrong entities" in text["text"] and "(PER)" in text["text"]

    image_metrics = report(runs["image_classification"])
    assert (
        any(m["image"].endswith("red_0.png") for m in image_metrics["misclassified"])
        or image_metrics["accuracy"] < 1
    )
    evaluation = tb_run(runs["image_classification"], "eval_validation")
    images = server.get_json("/data/plugin/images/tags")[evaluation]
    assert {"validation/confusion_matrix", "validation/misclassified"} <= set(images)
    for tag in ("validation/confusion_matrix", "validation/misclassified"):
        (entry,) = server.get_json(
            "/data/plugin/images/images", run=evaluation, tag=tag, sample="0"
        )
        picture = Image.open(
            io.BytesIO(get_bytes(server, "/data/plugin/images/individualImage?" + entry["query"]))
        )
        assert picture.format == "PNG" and min(picture.size) > 100
        assert np.asarray(picture.convert("L")).std() > 10  # not a blank picture


def get_bytes(server, path: str) -> bytes:
    import urllib.request

    with urllib.request.urlopen(server.url + path, timeout=30) as reply:
        return reply.read()


@pytest.mark.parametrize("recipe", ["sentiment", "image_classification"])
def test_precision_recall_curves_per_class_agree_with_the_report_at_one_half(board, recipe):
    server, runs, _ = board
    run = runs[recipe]
    metrics = report(run)
    evaluation = tb_run(run, "eval_validation")
    tags = server.get_json("/data/plugin/pr_curves/tags")[evaluation]
    assert set(tags) == {f"validation/pr_curve/{name}/pr_curves" for name in metrics["labels"]}
    # two classes: argmax is "probability >= 0.5", threshold index 50 of 101
    for name in metrics["labels"]:
        curves = server.get_json(
            "/data/plugin/pr_curves/pr_curves",
            run=evaluation,
            tag=f"validation/pr_curve/{name}/pr_curves",
        )
        (curve,) = curves[evaluation]
        assert curve["recall"][0] == pytest.approx(1.0)  # every example is above threshold 0
        # The plugin leaves out the thresholds above the highest probability.
        assert curve["thresholds"] == pytest.approx(
            [i / 100 for i in range(len(curve["thresholds"]))]
        )
        if len(curve["thresholds"]) > 50:
            assert curve["recall"][50] == pytest.approx(
                metrics["per_class"][name]["recall"], abs=1e-6
            )
            assert curve["precision"][50] == pytest.approx(
                metrics["per_class"][name]["precision"], abs=1e-6
            )
        else:  # no example reaches 0.5 for this class: it is never predicted
            assert metrics["per_class"][name]["recall"] == 0


def test_every_run_is_an_hparams_session_with_its_final_metrics(board, tiny_bert):
    server, runs, _ = board
    from recipes.engine.lifecycle import final_metrics
    from recipes.engine.run_dir import RunDir

    sessions = {group["name"]: group for group in hparams_sessions(server)}
    # named relative to the runs directory served
    assert set(sessions) == {f"{recipe}/tiny" for recipe in runs}
    for recipe, run in runs.items():
        group = sessions[f"{recipe}/tiny"]
        # TensorBoard's own run name
        assert [s["name"] for s in group["sessions"]] == [f"{recipe}/tiny/logs"]
        values = {m["name"]["tag"]: m["value"] for m in group["metricValues"]}
        monitor = "val_entity_f1" if recipe == "ner" else "val_accuracy"
        expected = final_metrics(RunDir(run), monitor)
        assert values[monitor] == pytest.approx(expected[monitor], abs=1e-6)
        assert group["hparams"]["train.run_eagerly"] is True
    assert sessions["sentiment/tiny"]["hparams"]["model.backbone"] == str(tiny_bert)


@pytest.mark.parametrize("recipe", ["sentiment", "ner"])
def test_the_projector_serves_validation_embeddings_with_their_labels(board, recipe):
    server, runs, work = board
    run = runs[recipe]
    evaluation = tb_run(run, "eval_validation")
    deadline = time.monotonic() + 30  # the projector finds its configs in a background thread
    while (
        evaluation not in server.get_json("/data/plugin/projector/runs")
        and time.monotonic() < deadline
    ):
        time.sleep(0.5)
    info = server.get_json("/data/plugin/projector/info", run=evaluation)
    (embedding,) = info["embeddings"]
    name = embedding["tensorName"]
    import urllib.parse

    query = urllib.parse.urlencode({"run": evaluation, "name": name})
    tensor = np.frombuffer(get_bytes(server, f"/data/plugin/projector/tensor?{query}"), "<f4")
    metadata = get_bytes(server, f"/data/plugin/projector/metadata?{query}").decode()
    header, *rows = [line.split("\t") for line in metadata.splitlines()]
    assert header == (
        ["type", "predicted", "text"] if recipe == "ner" else ["label", "predicted", "text"]
    )
    hidden = 32  # the tiny BERTs' width
    count = embedding["tensorShape"][0]
    assert (
        embedding["tensorShape"] == [count, hidden]
        and tensor.size == count * hidden
        and len(rows) == count
    )
    assert np.isfinite(tensor).all() and tensor.std() > 0
    if recipe == "sentiment":
        dev = [json.loads(line) for line in (work / "dev.jsonl").read_text().splitlines()]
        assert count == EMBEDDINGS < len(dev)
        assert [r[0] for r in rows] == [d["label"] for d in dev[:count]]
        assert [r[2] for r in rows] == [d["text"] for d in dev[:count]]
    else:  # the true entities of the validation sentences, in order, up to the cap
        from recipes.ner.tags import entities

        sentences = make_ner_sentences(48, seed=3)[36:]
        truth = [
            (kind, " ".join(tokens[a:b]))
            for tokens, tags in sentences
            for kind, a, b in entities(tags)
        ]
        assert [(r[0], r[2]) for r in rows] == truth[:EMBEDDINGS] and count == min(
            len(truth), EMBEDDINGS
        )


def test_profile_of_a_few_steps_is_written_with_run_profile(board):
    _, runs, _ = board
    traces = list(
        (runs["sentiment"] / "logs" / "train" / "plugins" / "profile").glob("*/*.xplane.pb")
    )
    assert traces and traces[0].stat().st_size > 1000
    assert not (runs["ner"] / "logs" / "train" / "plugins").exists()  # off by default


def palette_pixels(picture: np.ndarray) -> int:
    """Pixels in TensorBoard's run colours (orange, pink, teal, red): the curves and their dots."""
    palette = np.array([(255, 112, 67), (238, 51, 119), (0, 153, 136), (204, 51, 17)])
    distance = np.abs(picture[:, :, None, :] - palette[None, None]).max(axis=-1)
    return int((distance < 20).any(axis=-1).sum())


@pytest.mark.slow  # `make test-all`: a browser; the tests above read the same data from the server
def test_screenshots_of_the_scalars_images_and_hparams_dashboards_show_the_runs(board, tmp_path):
    """Headless Chromium over the real server. Each dashboard is compared with the same dashboard of
    an empty TensorBoard ("No ... data was found"). KERAS_ZOO_SCREENSHOTS=DIR keeps the pictures
    (docs/screenshots holds the README's)."""
    from PIL import Image

    server, _, _ = board
    out = Path(os.environ.get("KERAS_ZOO_SCREENSHOTS") or tmp_path)
    out.mkdir(parents=True, exist_ok=True)
    (tmp_path / "empty").mkdir()
    main = (slice(80, None), slice(360, None))  # right of the run selector, below the header
    with serve_tensorboard(tmp_path / "empty", ready=lambda _: True) as empty:
        pictures = {}
        for dashboard in ("scalars", "images", "hparams"):
            shot, blank = out / f"{dashboard}.png", tmp_path / f"empty_{dashboard}.png"
            screenshot(f"{server.url}/#{dashboard}", shot, tmp_path / "chromium")
            screenshot(f"{empty.url}/#{dashboard}", blank, tmp_path / "chromium")
            picture = np.asarray(Image.open(shot).convert("RGB")).astype(int)
            nothing = np.asarray(Image.open(blank).convert("RGB")).astype(int)
            changed = (np.abs(picture - nothing).max(axis=-1) > 40)[main].mean()
            assert changed > 0.02, f"the {dashboard} dashboard looks like an empty TensorBoard's"
            pictures[dashboard] = picture[main]
    assert palette_pixels(pictures["scalars"]) > 50  # curves drawn in the runs' colours
    r, g, b = np.moveaxis(pictures["images"], -1, 0)
    assert ((b > 90) & (r < 60) & (g < 100)).sum() > 5000  # the confusion matrices' dark blue cells


def test_the_tensorboard_command_serves_runs_on_loopback_and_stops_on_ctrl_c(board):
    server, _, work = board
    # xdist workers ignore SIGINT, and children inherit that: give this one the terminal's default.
    process = subprocess.Popen(
        [sys.executable, "-m", "keras_zoo_cli", "tensorboard", str(work / "runs")],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        line = process.stdout.readline()  # blocks until TensorBoard is up (or the command failed)
        assert line.startswith("TensorBoard ") and " at http://127.0.0.1:" in line, (
            line + process.stderr.read()[-2000:]
        )
        url = line.split(" at ")[1].split()[0].rstrip("/")
        import urllib.request

        with urllib.request.urlopen(url + "/data/runs", timeout=30) as reply:
            assert "sentiment/tiny/logs/train" in json.loads(reply.read())
        process.send_signal(signal.SIGINT)
        out, _ = process.communicate(timeout=30)
        assert process.returncode == 0 and "TensorBoard stopped" in out
    finally:
        process.kill()
    port = server.url.rsplit(":", 1)[1]  # taken by the test server
    result = subprocess.run(
        [sys.executable, "-m", "keras_zoo_cli", "tensorboard", str(work / "runs"), "--port", port],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2 and f"127.0.0.1:{port}" in result.stderr.strip().splitlines()[-1]
    result = subprocess.run(
        [sys.executable, "-m", "keras_zoo_cli", "tensorboard", str(work / "missing")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2 and "missing: no such directory" in result.stderr


def test_run_tensorboard_false_writes_no_event_files_and_the_same_history(tmp_path):
    from recipes import engine
    from tests.toy_recipe import RECIPE

    logged, _ = engine.train(
        RECIPE, RECIPE.load_config(overrides=[f"run.dir={tmp_path / 'on'}"]), verbose=0
    )
    silent, _ = engine.train(
        RECIPE,
        RECIPE.load_config(overrides=[f"run.dir={tmp_path / 'off'}", "run.tensorboard=false"]),
        verbose=0,
    )
    assert list(logged.logs.rglob("events.out.tfevents.*")) and not silent.logs.exists()
    for key in ("loss", "val_loss", "val_accuracy"):  # logging does not change training
        assert [r[key] for r in history(silent.path)] == [r[key] for r in history(logged.path)]
    assert json.loads(silent.metrics.read_text())["validation"]["num_examples"] == 128
