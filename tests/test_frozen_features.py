"""A frozen backbone whose inputs are the same every epoch runs once: the head trains on its
features (training.head_on_features), in the very order and with the very arithmetic of training
the whole model, which is still what the run evaluates and exports. Compared in float32."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from tests.conftest import (
    make_image_folder,
    make_reviews,
    review_vocabulary,
    save_tiny_bert,
    write_jsonl,
)

TOLERANCE = 1e-5  # float32: the same arithmetic, in other batch shapes


def built_pair(recipe, overrides: list[str]):
    """The recipe built with the features computed once (speedups on) and without (off)."""
    built = {}
    for speedups in ("true", "false"):
        keras.utils.set_random_seed(0)
        cfg = recipe.load_config(
            overrides=[*overrides, f"train.speedups={speedups}", "train.precision=float32"]
        )
        built[speedups] = recipe.build(cfg, recipe.read_data(cfg))
    return built["true"], built["false"]


def two_epochs(dataset) -> list:
    return [batch for _ in range(2) for batch in dataset]


def test_image_features_come_in_the_order_and_with_the_values_of_the_pixels_they_replace(
    tiny_image_backbone, tmp_path
):
    from recipes.image_classification.recipe import RECIPE
    from zoo.heads import head_features

    photos = make_image_folder(tmp_path / "photos", 12, seed=4)
    on, off = built_pair(
        RECIPE,
        [
            f"data.train={photos}",
            f"model.backbone={tiny_image_backbone}",
            "model.finetune=frozen",
            "train.batch_size=4",
        ],
    )
    assert off.whole_model is None and on.whole_model is not None
    assert on.whole.input.shape == off.model.input.shape  # what the run exports still takes pixels
    assert on.model.input.shape[1:] == head_features(off.model).output.shape[1:]
    features = head_features(off.model)
    for (vectors, labels), (pixels, same_labels) in zip(
        two_epochs(on.train), two_epochs(off.train), strict=True
    ):
        np.testing.assert_array_equal(labels, same_labels)
        np.testing.assert_allclose(vectors, features(pixels), atol=TOLERANCE, rtol=TOLERANCE)
    (val_vectors, _), (val_pixels, _) = next(iter(on.validation)), next(iter(off.validation))
    np.testing.assert_allclose(val_vectors, features(val_pixels), atol=TOLERANCE, rtol=TOLERANCE)


# length-grouped batches; length buckets (XLA)
@pytest.mark.parametrize("jit_compile", ["false", "true"])
def test_sentence_vectors_come_in_the_order_of_the_texts_they_replace(
    tiny_bert, tmp_path, jit_compile
):
    from recipes.sentiment.recipe import RECIPE
    from zoo.heads import head_features

    train = write_jsonl(tmp_path / "train.jsonl", make_reviews(150, seed=2))
    on, off = built_pair(
        RECIPE,
        [
            f"data.train={train}",
            f"model.backbone={tiny_bert}",
            "model.finetune=frozen",
            "train.batch_size=4",
            f"train.jit_compile={jit_compile}",
        ],
    )
    assert off.whole_model is None and on.whole_model is not None
    features = head_features(off.model)
    batches = list(zip(two_epochs(on.train), two_epochs(off.train), strict=True))
    assert len(batches) > 2 * 30  # several groups of batches an epoch, so the shuffles are tested
    for (vectors, labels), (tokens, same_labels) in batches:
        np.testing.assert_array_equal(labels, same_labels)
        # inference mode: the frozen backbone's own dropout is off when its features are computed once
        np.testing.assert_allclose(
            vectors, features(tokens, training=False), atol=TOLERANCE, rtol=TOLERANCE
        )


def train_twice(recipe, overrides: list[str], tmp_path, capsys) -> dict:
    from recipes import engine

    runs = {}
    for speedups in ("true", "false"):
        cfg = recipe.load_config(
            overrides=[
                *overrides,
                f"train.speedups={speedups}",
                "train.precision=float32",
                f"run.runs_dir={tmp_path / 'runs'}",
                f"run.name=speedups-{speedups}",
            ]
        )
        run, report = engine.train(recipe, cfg, verbose=0)
        runs[speedups] = {
            "run": run,
            "report": report,
            "printed": capsys.readouterr().out,
            "history": np.genfromtxt(run.history, delimiter=",", names=True),
        }
    return runs


def test_a_frozen_image_head_trained_on_features_is_the_head_trained_on_images(
    tiny_image_backbone, tmp_path, capsys
):
    from recipes import engine
    from recipes.image_classification.recipe import RECIPE

    photos = make_image_folder(tmp_path / "photos", 16, seed=5)
    runs = train_twice(
        RECIPE,
        [
            f"data.train={photos}",
            f"model.backbone={tiny_image_backbone}",
            "model.finetune=frozen",
            "train.frozen_epochs=4",
            "train.batch_size=4",
            "train.head_learning_rate=3e-2",
        ],
        tmp_path,
        capsys,
    )
    on, off = runs["true"], runs["false"]
    assert "computing the frozen backbone's features of 32 examples once" in on["printed"]
    assert "features" not in off["printed"]
    for column in ("loss", "accuracy", "val_loss", "val_accuracy"):
        np.testing.assert_allclose(
            on["history"][column], off["history"][column], atol=TOLERANCE, rtol=TOLERANCE
        )
    assert on["history"]["loss"][-1] < on["history"]["loss"][0]  # it trained
    assert round(on["report"]["validation"]["accuracy"], 4) == round(
        off["report"]["validation"]["accuracy"], 4
    )
    # The exported model is the whole one, taking pixels, and predicts as the other run's
    images = sorted(str(p) for p in (photos / "red").iterdir())[:6]
    predicted = [engine.predict(RECIPE, runs[s]["run"].path, images) for s in ("true", "false")]
    assert [row["label"] for row in predicted[0]] == [row["label"] for row in predicted[1]]
    np.testing.assert_allclose(
        [row["probability"] for row in predicted[0]],
        [row["probability"] for row in predicted[1]],
        atol=TOLERANCE,
    )
    exported = keras.saving.load_model(str(on["run"].keras_model), compile=False)
    assert tuple(exported.input.shape[1:]) == (32, 32, 3)


def test_a_frozen_text_head_trained_on_features_is_the_head_trained_on_texts(tmp_path, capsys):
    from recipes import engine
    from recipes.sentiment.recipe import RECIPE

    # same arithmetic both ways
    backbone = save_tiny_bert(review_vocabulary(), tmp_path / "no_dropout", dropout=0.0)
    train = write_jsonl(tmp_path / "train.jsonl", make_reviews(120, seed=3))
    runs = train_twice(
        RECIPE,
        [
            f"data.train={train}",
            f"model.backbone={backbone}",
            "model.finetune=frozen",
            "train.epochs=3",
            "train.batch_size=8",
            "train.learning_rate=3e-2",
        ],
        tmp_path,
        capsys,
    )
    on, off = runs["true"], runs["false"]
    assert "features of 120 examples once" in on["printed"]
    for column in ("loss", "accuracy", "val_loss", "val_accuracy"):
        np.testing.assert_allclose(
            on["history"][column], off["history"][column], atol=TOLERANCE, rtol=TOLERANCE
        )
    assert on["history"]["loss"][-1] < on["history"]["loss"][0]
    texts = ["a wonderful film", "a dull and tedious film"]
    predicted = [engine.predict(RECIPE, runs[s]["run"].path, texts) for s in ("true", "false")]
    for a, b in zip(*predicted):
        assert a["label"] == b["label"]
        np.testing.assert_allclose(
            list(a["probabilities"].values()), list(b["probabilities"].values()), atol=TOLERANCE
        )


def test_features_that_would_not_fit_in_memory_fall_back_saying_so(
    tiny_image_backbone, tmp_path, monkeypatch, capsys
):
    from recipes.image_classification.recipe import RECIPE

    monkeypatch.setattr("recipes.engine.training.available_memory", lambda: 1000)  # bytes
    photos = make_image_folder(tmp_path / "photos", 6, seed=6)
    cfg = RECIPE.load_config(
        overrides=[
            f"data.train={photos}",
            f"model.backbone={tiny_image_backbone}",
            "model.finetune=frozen",
        ]
    )
    built = RECIPE.build(cfg, RECIPE.read_data(cfg))
    printed = capsys.readouterr().out.strip().splitlines()
    assert built.whole_model is None and built.model.input.shape[1:] == (32, 32, 3)
    assert len(printed) == 1 and "over half the 0.0 GB of memory available" in printed[0]
    assert "the frozen backbone runs on every batch of every epoch instead" in printed[0]


def test_a_frozen_run_on_features_interrupted_resumes_where_it_was(
    tiny_image_backbone, tmp_path, monkeypatch
):
    """Interrupted after epoch 2 of 4 (as Ctrl-C would), `--resume` computes the features again and
    trains epochs 3 and 4 from the saved head and optimizer state. Not the same figures as one go
    to the digit: a resumed run's datasets start again from their first shuffle (every recipe's do),
    so epoch 3 sees another order; a head trained again from scratch would be back at epoch 1's loss."""
    from recipes import engine
    from recipes.engine import training
    from recipes.image_classification.recipe import RECIPE

    photos = make_image_folder(tmp_path / "photos", 16, seed=7)
    overrides = [
        f"data.train={photos}",
        f"model.backbone={tiny_image_backbone}",
        "model.finetune=frozen",
        "train.frozen_epochs=4",
        "train.batch_size=4",
        "train.head_learning_rate=3e-2",
        "train.precision=float32",
        f"run.runs_dir={tmp_path / 'runs'}",
        "run.export=false",
    ]
    one_go, _ = engine.train(
        RECIPE, RECIPE.load_config(overrides=[*overrides, "run.name=one-go"]), verbose=0
    )

    class Interrupt(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 1:
                raise KeyboardInterrupt

    callbacks = training.training_callbacks
    monkeypatch.setattr(
        training, "training_callbacks", lambda *a, **k: [*callbacks(*a, **k), Interrupt()]
    )
    cfg = RECIPE.load_config(overrides=[*overrides, "run.name=resumed"])
    with pytest.raises(KeyboardInterrupt):
        engine.train(RECIPE, cfg, verbose=0)
    monkeypatch.setattr(training, "training_callbacks", callbacks)
    run, _ = engine.train(RECIPE, cfg, resume=True, verbose=0)
    expected = np.genfromtxt(one_go.history, delimiter=",", names=True)
    got = np.genfromtxt(run.history, delimiter=",", names=True)
    assert list(got["epoch"]) == [0, 1, 2, 3]
    # the epochs before the interruption, as they were
    for column in (
        "loss",
        "val_loss",
        "val_accuracy",
    ):
        np.testing.assert_allclose(
            got[column][:2], expected[column][:2], atol=TOLERANCE, rtol=TOLERANCE
        )
    # the head learns fast enough to tell a restart
    assert expected["loss"][0] - expected["loss"][2] > 0.2
    np.testing.assert_allclose(got["loss"][2:], expected["loss"][2:], rtol=0.1)
