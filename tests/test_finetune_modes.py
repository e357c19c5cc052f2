"""Fine-tuning modes on the tiny backbone, through the Python API."""

import numpy as np
import pytest

from tests.conftest import make_reviews, write_jsonl


@pytest.mark.parametrize("mode", ["frozen", "lora"])
def test_frozen_and_lora_leave_the_pretrained_backbone_weights_alone(tiny_bert, tmp_path, mode):
    import keras

    from recipes import engine, sentiment
    from zoo.backbones import load_backbone
    from zoo.heads import set_finetune_mode, split_at_head, text_classifier

    train = write_jsonl(tmp_path / "train.jsonl", make_reviews(96, seed=5))
    cfg = sentiment.RECIPE.load_config(
        overrides=[
            f"model.backbone={tiny_bert}",
            f"data.train={train}",
            "data.validation=",
            "train.epochs=1",
            "train.learning_rate=1e-2",
            f"model.finetune={mode}",
            "model.lora_rank=2",
            f"run.runs_dir={tmp_path}",
            "run.export=false",
        ]
    )
    run, report = engine.train(sentiment.RECIPE, cfg, verbose=0)
    pretrained, _ = load_backbone(str(tiny_bert))
    backbone = load_backbone(str(tiny_bert))[0]
    set_finetune_mode(backbone, mode, cfg.model.lora_rank)
    model = text_classifier(backbone, 2, cfg.model.dropout, cfg.model.pooling)
    if mode == "frozen":  # the head trained on features computed once: its checkpoint is the head's
        split_at_head(model)[1].load_weights(str(run.best_weights))
        exported = keras.saving.load_model(str(run.keras_model), compile=False)
        # the exported model's whole backbone is the pretrained one
        for before, after in zip(
            pretrained.weights, exported.get_layer(pretrained.name).weights, strict=True
        ):
            np.testing.assert_array_equal(before, after)
    else:
        model.load_weights(str(run.best_weights))
    embedding = "token_embedding"
    before = pretrained.get_layer(embedding).get_weights()[0]
    after = model.get_layer(pretrained.name).get_layer(embedding).get_weights()[0]
    np.testing.assert_array_equal(before, after)  # embeddings are never trained in either mode
    head_kernel = model.get_layer("logits").get_weights()[0]
    assert np.abs(head_kernel).sum() > 0
    if mode == "lora":
        lora = [v for v in model.trainable_variables if "lora" in v.path]
        assert lora, "LoRA adapters are trainable"
        # Keras's LoRA freezes the kernels of the adapted layers and leaves their biases trainable.
        others = [
            v.path
            for v in model.trainable_variables
            if "lora" not in v.path and "logits" not in v.path
        ]
        assert others and all(p.endswith(("query/bias", "value/bias")) for p in others), others
    else:
        assert {v.path.split("/")[0] for v in model.trainable_variables} == {"logits"}
    assert report["validation"]["num_examples"] == 10  # 10% of 96, stratified
    keras.backend.clear_session()


@pytest.mark.parametrize(
    "rows, batch_size, where, kept",
    [
        # a later step's loss shows it
        (
            256,
            32,
            r"the training loss is (nan|inf) at epoch 1, step \d+",
            0,
        ),
        # One step an epoch: its loss is finite, the update blows the weights up; only validation shows it.
        (40, 64, r"val_loss is (nan|inf) after epoch 1", 0),
    ],
)
def test_a_diverging_run_fails_saying_where_and_keeps_nothing_of_it(
    tiny_bert, tmp_path, rows, batch_size, where, kept
):
    """`train.learning_rate=1e30`: the run ends `failed`, exit 2, one line naming the epoch (and
    step) and the learning rate; no weights of the diverged epoch are saved, nothing is exported,
    and predict refuses the run."""
    import json
    import re

    from tests.conftest import cli_here

    train = write_jsonl(tmp_path / "train.jsonl", make_reviews(rows, seed=6))
    dev = write_jsonl(tmp_path / "dev.jsonl", make_reviews(16, seed=7))
    result = cli_here(
        "train",
        "sentiment",
        "--runs-dir",
        str(tmp_path),
        "--name",
        "nan",
        "--set",
        f"model.backbone={tiny_bert}",
        "--set",
        f"data.train={train}",
        "--set",
        f"data.validation={dev}",
        "--set",
        "train.epochs=2",
        "--set",
        f"train.batch_size={batch_size}",
        "--set",
        "train.learning_rate=1e30",
        "--set",
        "train.warmup_ratio=0",
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("keras-zoo")]
    assert len(errors) == 1 and re.search(
        f"training diverged: {where}; lower train.learning_rate \\(it is 1e\\+30\\)", errors[0]
    ), result.stderr[-2000:]
    run = tmp_path / "sentiment" / "nan"
    status = json.loads((run / "run.json").read_text())
    assert status["status"] == "failed" and "training diverged" in status["reason"]
    assert not (run / "export" / "model.keras").exists()
    rows_kept = (
        (run / "history.csv").read_text().splitlines()[1:] if (run / "history.csv").exists() else []
    )
    assert len(rows_kept) == kept  # the epochs before the diverged one, not it
    # none of the diverged epoch's
    assert (run / "checkpoints" / "best.weights.h5").exists() == bool(kept)
    predicted = cli_here("predict", "sentiment", str(run), "a fine film")
    assert predicted.returncode == 2 and "the run did not finish" in predicted.stderr
