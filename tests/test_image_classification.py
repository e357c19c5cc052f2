"""The image classification recipe end to end on a tiny ResNet saved locally, with no network:
train (two phases) with awkward files in the training folder, evaluate, predict, export (SavedModel
on image bytes, TFLite), and the bad-input errors."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import check_model_card, check_preset_export, cli_here, make_image_folder

# Any attempt to reach the network fails at once: the recipe must not need it.
OFFLINE = {
    "http_proxy": "http://127.0.0.1:9",
    "https_proxy": "http://127.0.0.1:9",
    "HF_HUB_OFFLINE": "1",
}
UNDECODABLE = {"truncated.jpg", "not_an_image.jpg"}


def add_awkward_files(folder: Path) -> None:
    """The files the issue lists; the first two do not decode, the rest must train."""
    from PIL import Image

    rng = np.random.default_rng(1)
    red = np.clip(np.array([200, 40, 40]) + rng.normal(0, 30, (40, 50, 3)), 0, 255).astype("uint8")
    Image.fromarray(red).save(folder / "whole.jpg")
    data = (folder / "whole.jpg").read_bytes()
    (folder / "truncated.jpg").write_bytes(data[: len(data) // 2])
    (folder / "not_an_image.jpg").write_text("this is a text file\n")
    Image.new("RGB", (1, 1), (210, 30, 30)).save(folder / "one_pixel.png")
    Image.fromarray(red[..., 0].astype("uint16") * 257).save(folder / "sixteen_bit.png")
    Image.fromarray(red).convert("CMYK").save(folder / "cmyk.jpg")
    Image.fromarray(red).convert("RGBA").save(folder / "rgba.png")
    Image.fromarray(red).convert("L").save(folder / "grey.jpg")
    y, x = np.mgrid[0:4000, 0:6000]
    big = np.stack([200 + 0 * x, (x // 100) % 50, (y // 100) % 50], -1).astype("uint8")
    Image.fromarray(big).save(folder / "big_6000x4000.jpg", quality=70)


@pytest.fixture(scope="module")
def image_run(tiny_image_backbone, tmp_path_factory):
    root = tmp_path_factory.mktemp("images")
    photos = root / "photos"
    make_image_folder(photos / "train", 24, seed=0)
    make_image_folder(photos / "val", 10, seed=1)
    add_awkward_files(photos / "train" / "red")
    runs = root / "runs"
    result = cli_here(
        "train",
        "image_classification",
        "--runs-dir",
        str(runs),
        "--name",
        "tiny",
        "--set",
        f"model.backbone={tiny_image_backbone}",
        "--set",
        f"data.train={photos}",
        "--set",
        "train.head_epochs=3",
        "--set",
        "train.epochs=3",
        "--set",
        "train.batch_size=8",
        "--set",
        "train.head_learning_rate=1e-2",
        "--set",
        "train.learning_rate=1e-3",
        env=OFFLINE,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return {
        "root": root,
        "photos": photos,
        "run": runs / "image_classification" / "tiny",
        "stdout": result.stdout,
        "backbone": tiny_image_backbone,
    }


def test_training_skips_undecodable_files_lists_them_and_trains_on_the_rest(image_run):
    run = image_run["run"]
    listed = {Path(line).name for line in (run / "undecodable.txt").read_text().splitlines()}
    assert listed == UNDECODABLE
    assert "skipped 2 files that do not decode" in image_run["stdout"]
    task = json.loads((run / "task.json").read_text())
    # 24 generated + 9 awkward files per red, 24 blue; the two undecodable ones are gone
    assert task["examples"] == {"train": 24 + 24 + 9 - 2, "validation": 20, "test": 0}
    assert task["undecodable"] == 2
    # from the backbone's converter, 32 / 0.875
    assert task["image_size"] == 32 and task["side"] == 37


def test_two_phases_train_and_reach_high_validation_accuracy(image_run):
    run = image_run["run"]
    with open(run / "history.csv") as f:
        rows = list(csv.DictReader(f))
    # 3 head + 3 fine-tuning epochs, numbered on
    assert [int(r["epoch"]) for r in rows] == list(range(6))
    assert {
        "accuracy",
        "macro_f1",
        "val_accuracy",
        "val_macro_f1",
        "learning_rate",
        "examples_per_second",
    } <= set(rows[0])
    done = sorted(p.name for p in (run / "checkpoints").glob("phase*.done.json"))
    assert done == ["phase0-head.done.json", "phase1-finetune.done.json"]
    assert not (run / "backup").exists()
    metrics = json.loads((run / "metrics.json").read_text())["validation"]
    assert metrics["num_examples"] == 20
    # red vs blue: an easy task, if the pipeline is right
    assert metrics["accuracy"] >= 0.9, metrics
    assert metrics["confusion_matrix"] and len(metrics["misclassified"]) == round(
        20 * (1 - metrics["accuracy"])
    )


def test_tensorboard_has_the_confusion_matrix_image(image_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(image_run["run"] / "logs" / "eval_validation"))
    acc.Reload()
    tags = acc.Tags()["tensors"]
    assert "validation/confusion_matrix" in tags and "validation/report" in tags


def test_predict_prints_labels_writes_csv_and_flags_undecodable_files(image_run, tmp_path):
    photos = image_run["photos"]
    out = tmp_path / "predictions.csv"
    bad = photos / "train" / "red" / "not_an_image.jpg"
    result = cli_here(
        "predict",
        "image_classification",
        str(image_run["run"]),
        str(photos / "val" / "blue"),
        str(photos / "val" / "red" / "red_1.jpg"),
        str(bad),
        "--csv",
        str(out),
        env=OFFLINE,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    lines = [line for line in result.stdout.splitlines() if "\t" in line]
    assert len(lines) == 12
    predicted = {Path(line.split("\t")[2]).name: line.split("\t")[0] for line in lines}
    assert predicted["red_1.jpg"] == "red" and predicted["not_an_image.jpg"] == "-"
    assert sum(label == "blue" for name, label in predicted.items() if name.startswith("blue")) >= 9
    with open(out) as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 12 and rows[-1]["error"] == "not a decodable image"
    assert 0.5 <= float(rows[0]["probability"]) <= 1.0


def test_saved_model_on_file_bytes_matches_keras_without_keras_zoo(image_run):
    from recipes import engine
    from recipes import image_classification as ic

    run = image_run["run"]
    files = sorted(str(p) for p in (image_run["photos"] / "val").rglob("*.*"))
    keras_rows = engine.predict(ic.RECIPE, run, files)
    expected = np.array(
        [[r["probabilities"][name] for name in ("blue", "red")] for r in keras_rows]
    )
    script = textwrap.dedent(f"""
        import json, sys
        import tensorflow as tf
        files = json.loads(sys.stdin.read())
        serve = tf.saved_model.load({str(run / "export" / "saved_model")!r}).signatures["serving_default"]
        out = serve(image_bytes=tf.constant([open(f, "rb").read() for f in files]))
        assert not any(m in sys.modules for m in ("keras_hub", "recipes", "zoo")), "imported more than TF"
        print(json.dumps({{"p": out["probabilities"].numpy().tolist(),
                          "names": [n.decode() for n in out["label_names"].numpy()[0]]}}))
    """)
    result = subprocess.run(
        [sys.executable, "-c", script],
        input=json.dumps(files),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    served = json.loads(result.stdout.strip().splitlines()[-1])
    assert served["names"] == ["blue", "red"]
    assert np.abs(np.array(served["p"]) - expected).max() < 1e-4


def test_tflite_models_agree_with_keras_on_validation_images(image_run):
    from recipes import engine
    from recipes import image_classification as ic
    from recipes.image_classification.images import read_images
    from zoo.export import TFLITE_VARIANTS, tflite_probabilities
    from zoo.image_inputs import center_crop, predict_probabilities

    run, _, predictor = engine.open_finished(ic.RECIPE, image_run["run"])
    images = predictor.decode(read_images(str(image_run["photos"] / "val"), "validation"))
    keras_top1 = predict_probabilities(predictor.model, images).argmax(axis=-1)
    crops = center_crop(images.pixels, int(predictor.model.input.shape[1])).numpy()
    for variant, name in TFLITE_VARIANTS.items():
        probabilities = tflite_probabilities(run.export / name, crops)
        np.testing.assert_allclose(probabilities.sum(axis=-1), 1.0, atol=1e-5)
        agreement = (probabilities.argmax(axis=-1) == keras_top1).mean()
        assert agreement == 1.0 if variant == "float" else agreement >= 0.9, (variant, agreement)


def test_evaluate_a_finished_run_on_its_validation_folder(image_run):
    result = cli_here("evaluate", "image_classification", str(image_run["run"]), env=OFFLINE)
    assert result.returncode == 0, result.stderr[-2000:]
    metrics = json.loads((image_run["run"] / "metrics.json").read_text())
    assert metrics["evaluate_validation"]["accuracy"] == metrics["validation"]["accuracy"]
    assert "accuracy" in result.stdout


def make_bad(kind: str, tmp_path: Path) -> tuple[Path, str]:
    """A broken data set and the words its one-line error must contain."""
    photos = make_image_folder(tmp_path / "photos", 4)
    if kind == "missing":
        return tmp_path / "nowhere", "nowhere: not found"
    if kind == "empty_class":
        (photos / "green").mkdir()
        return photos, "green: empty class folder"
    if kind == "all_undecodable_class":
        (photos / "green").mkdir()
        for i in range(5):  # enough that the stratified validation split has room for a green file
            (photos / "green" / f"x{i}.jpg").write_text("no image")
        return photos, "class green has no decodable training images"
    if kind == "class_only_in_validation":
        root = tmp_path / "split"
        make_image_folder(root / "train", 4)
        make_image_folder(root / "val", 2)
        (root / "val" / "green").mkdir()
        (root / "val" / "green" / "g.png").write_bytes((photos / "red" / "red_0.png").read_bytes())
        return root, "label 'green' was never seen in training (labels: blue, red)"
    if kind == "csv_missing_column":
        table = tmp_path / "images.csv"
        table.write_text("file,label\nphotos/red/red_0.png,red\n")
        return table, "images.csv:1: no column 'path'"
    if kind == "csv_missing_file":
        table = tmp_path / "images.csv"
        table.write_text("path,label\nphotos/red/red_0.png,red\nphotos/red/gone.jpg,red\n")
        return table, "images.csv:3: image file not found"
    raise AssertionError(kind)


def test_bad_image_data_on_the_command_line_is_one_line_and_leaves_no_run(
    tiny_image_backbone, tmp_path
):
    source, words = make_bad("class_only_in_validation", tmp_path)
    result = cli_here(
        "train",
        "image_classification",
        "--runs-dir",
        str(tmp_path / "runs"),
        "--name",
        "bad",
        "--set",
        f"model.backbone={tiny_image_backbone}",
        "--set",
        f"data.train={source}",
        env=OFFLINE,
    )
    errors = [line for line in result.stderr.splitlines() if line.startswith("keras-zoo")]
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-2000:]
    assert len(errors) == 1 and words in errors[0], errors
    assert not (tmp_path / "runs" / "image_classification" / "bad").exists()


@pytest.mark.parametrize(
    "kind",
    [
        "missing",
        "empty_class",
        "all_undecodable_class",
        "class_only_in_validation",
        "csv_missing_column",
        "csv_missing_file",
    ],
)
def test_bad_image_data_gets_an_error_naming_it_and_no_run(kind, tiny_image_backbone, tmp_path):
    # In-process (the CLI's handling of these errors is the test above): one TF start-up for all.
    from recipes import engine
    from recipes import image_classification as ic
    from zoo.errors import UserError

    source, words = make_bad(kind, tmp_path)
    cfg = ic.RECIPE.load_config(
        overrides=[
            f"model.backbone={tiny_image_backbone}",
            f"data.train={source}",
            f"run.runs_dir={tmp_path / 'runs'}",
            "run.name=bad",
        ]
    )
    with pytest.raises(UserError, match=".") as error:
        engine.train(ic.RECIPE, cfg, verbose=0)
    assert words in str(error.value) and "\n" not in str(error.value)
    assert not (tmp_path / "runs" / "image_classification" / "bad").exists()


def test_a_text_backbone_is_refused(tiny_bert, tmp_path):
    photos = make_image_folder(tmp_path / "photos", 5)
    result = cli_here(
        "train",
        "image_classification",
        "--runs-dir",
        str(tmp_path / "runs"),
        "--set",
        f"model.backbone={tiny_bert}",
        "--set",
        f"data.train={photos}",
        env=OFFLINE,
    )
    assert (
        result.returncode == 2
        and "is a text backbone; this recipe needs an image one" in result.stderr
    )


# oxford_iiit_pet: TFDS cannot mock its boxes
@pytest.mark.parametrize("name", ["tf_flowers", "cats_vs_dogs"])
def test_tfds_images_are_read_encoded_and_decode_like_files(name):
    tfds = pytest.importorskip("tensorflow_datasets")
    from recipes.image_classification.images import decode_images, read_images

    # offline: TFDS's mock examples, real feature specs
    with tfds.testing.mock_data(num_examples=6):
        data = read_images(f"tfds:{name}", "train")
    assert len(data) == 6 and not data.files and all(isinstance(b, bytes) for b in data.encoded)
    assert data.origins[0] == f"tfds:{name}/train[0]"
    decoded = decode_images(data, 40)
    assert decoded.pixels.shape == (6, 40, 40, 3) and not decoded.undecodable


def test_images_past_the_memory_budget_are_decoded_each_time_with_the_same_pixels(tmp_path):
    from recipes.image_classification.images import decode_images, read_images

    photos = make_image_folder(tmp_path / "photos", 5)
    (photos / "red" / "broken.jpg").write_text("not an image")
    data = read_images(str(photos), "train")
    cached = decode_images(data, 24)
    # 10 images of 24x24x3 do not fit in 1000 bytes
    streamed = decode_images(data, 24, max_bytes=1000)
    assert cached.pixels is not None and streamed.pixels is None
    assert streamed.origins == cached.origins and [Path(o).name for o in streamed.undecodable] == [
        "broken.jpg"
    ]
    np.testing.assert_array_equal(
        np.stack(list(streamed.dataset().as_numpy_iterator())), cached.pixels
    )
    np.testing.assert_array_equal(streamed.take([3, 1]), cached.pixels[[3, 1]])
    targets = np.arange(len(cached))
    shuffled = [int(t) for _, t in streamed.dataset(targets, shuffle_seed=0).as_numpy_iterator()]
    assert sorted(shuffled) == list(targets) and shuffled != list(targets)


def test_class_weights_balance_only_imbalanced_sets_and_top_k_counts_the_true_class():
    from recipes.common.labels import balanced_class_weights
    from recipes.common.metrics import top_k_accuracy

    # 1.25x: left alone
    assert balanced_class_weights(np.array([0] * 50 + [1] * 40), 2, "auto") is None
    weights = balanced_class_weights(np.array([0] * 90 + [1] * 30), 2, "auto")
    assert weights == pytest.approx({0: 120 / (2 * 90), 1: 120 / (2 * 30)})
    assert balanced_class_weights(np.array([0] * 90 + [1] * 30), 2, "none") is None
    probabilities = np.array([[0.5, 0.3, 0.2], [0.1, 0.3, 0.6], [0.2, 0.5, 0.3]])
    assert top_k_accuracy(np.array([0, 1, 2]), probabilities, 1) == pytest.approx(1 / 3)
    assert top_k_accuracy(np.array([0, 1, 2]), probabilities, 2) == pytest.approx(1.0)


def test_frozen_mode_trains_the_head_alone_for_its_own_epochs():
    from recipes.image_classification.recipe import RECIPE, training_phases

    cfg = RECIPE.load_config(overrides=["model.finetune=frozen", "train.frozen_epochs=7"])
    phases = training_phases(cfg, backbone=None, steps_per_epoch=10, num_classes=2)
    assert [(p.name, p.epochs) for p in phases] == [("head", 7)]
    cfg = RECIPE.load_config(overrides=["train.head_epochs=3", "train.epochs=5"])
    assert [(p.name, p.epochs) for p in training_phases(cfg, None, 10, 2)] == [
        ("head", 3),
        ("finetune", 5),
    ]


def test_the_run_has_a_model_card_whose_figures_are_its_metrics(image_run):
    front = check_model_card(image_run["run"])
    assert front["pipeline_tag"] == "image-classification"
    assert "undecodable" not in front  # front matter is model-card metadata only
    run, photos = image_run["run"], image_run["photos"]
    data = json.loads((run / "data.json").read_text())
    assert (data["train"]["source"], data["validation"]["source"]) == (
        str(photos / "train"),
        str(photos / "val"),
    )
    assert not data["validation"]["part_of_train"] and len(data["train"]["sha256"]) == 64
    # the user's own images stay out of a shared card
    assert not list(run.glob("*misclassified*.png"))


def test_a_preset_export_reloads_in_a_fresh_process_and_predicts_as_the_run(image_run, tmp_path):
    images = sorted(str(p) for p in (image_run["photos"] / "val").rglob("*.*"))[:12]
    check_preset_export("image_classification", image_run["run"], images, tmp_path / "preset")
    # The backbone's own input normalisation goes with it, for plain KerasHub users
    assert (tmp_path / "preset" / "image_converter.json").exists()


@pytest.mark.parametrize("frozen_augment", [False, True])
def test_a_frozen_head_trains_on_centre_crops_without_label_smoothing_unless_asked(
    tiny_image_backbone, tmp_path, frozen_augment
):
    from recipes.image_classification.recipe import RECIPE
    from zoo.heads import head_features
    from zoo.image_inputs import center_crop

    photos = make_image_folder(tmp_path / "photos", 5, seed=3)
    cfg = RECIPE.load_config(
        overrides=[
            f"data.train={photos}",
            f"model.backbone={tiny_image_backbone}",
            "model.finetune=frozen",
            "augment.rotation=0.1",
            f"train.frozen_augment={str(frozen_augment).lower()}",
        ]
    )
    built = RECIPE.build(cfg, RECIPE.read_data(cfg))
    size = int(built.whole.input.shape[1])
    crops = center_crop(built.data.train.take(np.arange(len(built.data.train))), size).numpy()
    trained = np.concatenate([x.numpy() for x, _ in built.train])
    if not frozen_augment:  # the head trains on the backbone's features of the crops, computed once
        crops = head_features(built.whole).predict(crops, verbose=0)
    # every training example is (the features of) one of the centre crops, unless augmentation is asked for
    exact = [
        np.abs(crops - example).reshape(len(crops), -1).max(axis=1).min() <= 1e-5
        for example in trained
    ]
    assert all(exact) != frozen_augment and len(trained) == len(crops)
    assert (built.whole_model is None) == frozen_augment
    built.phases[0].prepare(built.model)
    assert built.model.loss.label_smoothing == (0.1 if frozen_augment else 0.0)
    assert any("train.frozen_augment=true" in note for note in built.notes) != frozen_augment


def test_images_past_the_pixel_limit_are_skipped_before_decoding_saying_why(image_run, tmp_path):
    """A PNG (GIF, BMP, WebP) whose header declares 12,000 x 12,000 pixels is not decoded (it would
    take 3.5 GB): predict flags it with the reason; a JPEG is decoded at reduced scale instead."""
    from PIL import Image

    from recipes import engine
    from zoo.image_inputs import MAX_DECODED_PIXELS, declared_size, decoded_pixels

    for extension in ("png", "gif", "bmp", "webp", "jpg"):
        path = tmp_path / f"small.{extension}"
        Image.new("RGB", (37, 23), (10, 20, 30)).save(path)
        assert declared_size(path.read_bytes()) == (37, 23), extension
    jpeg = tmp_path / "small.jpg"
    Image.new("RGB", (2000, 1600)).save(jpeg)
    assert decoded_pixels(jpeg.read_bytes(), 200) == 250 * 200  # decoded at 1/8 scale
    huge = bytearray((tmp_path / "small.png").read_bytes())
    huge[16:24] = (12000).to_bytes(4, "big") * 2  # its header now declares 12,000 x 12,000
    (tmp_path / "huge.png").write_bytes(bytes(huge))
    assert decoded_pixels(bytes(huge), 32) == 144_000_000 > MAX_DECODED_PIXELS
    rows = engine.predict(
        "image_classification",
        image_run["run"],
        [str(tmp_path / "huge.png"), str(image_run["photos"] / "val" / "red" / "red_1.jpg")],
    )
    assert rows[0]["label"] is None and rows[0]["error"].startswith(
        "144 M pixels to decode, over the limit of 64 M"
    )
    assert rows[1]["label"] == "red"


def test_augmented_batches_are_the_same_for_the_same_seed(tiny_image_backbone, tmp_path):
    """Two pipelines built with the same seed give the same crops, flips and order, epoch after
    epoch: the augmentation runs one batch at a time (its random ops are stateful; batches
    augmented in parallel drew them in thread order, and hymenoptera runs of the same seed differed)."""
    import keras

    from recipes.image_classification.recipe import RECIPE

    photos = make_image_folder(tmp_path / "photos", 24, seed=8)
    cfg = RECIPE.load_config(
        overrides=[
            f"data.train={photos}",
            f"model.backbone={tiny_image_backbone}",
            "train.batch_size=4",
        ]
    )
    data = RECIPE.read_data(cfg)
    epochs = []
    for _ in range(2):
        keras.utils.set_random_seed(cfg.train.seed)
        built = RECIPE.build(cfg, data)
        epochs.append([x.numpy() for _ in range(3) for x, _ in built.train])
    assert len(epochs[0]) > 20 and not np.array_equal(epochs[0][0], epochs[0][len(epochs[0]) // 3])
    for a, b in zip(*epochs, strict=True):
        np.testing.assert_array_equal(a, b)
