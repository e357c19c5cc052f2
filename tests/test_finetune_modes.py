"""Fine-tuning modes on the tiny backbone, through the Python API."""

import numpy as np
import pytest

from tests.conftest import make_reviews, write_jsonl


@pytest.mark.parametrize("mode", ["frozen", "lora"])
def test_frozen_and_lora_leave_the_pretrained_backbone_weights_alone(tiny_bert, tmp_path, mode):
    import keras

    from recipes import engine, sentiment
    from zoo.backbones import load_backbone
    from zoo.heads import set_finetune_mode, text_classifier

    train = write_jsonl(tmp_path / "train.jsonl", make_reviews(96, seed=5))
    cfg = sentiment.RECIPE.load_config(overrides=[
        f"model.backbone={tiny_bert}", f"data.train={train}", "data.validation=", "train.epochs=1",
        "train.learning_rate=1e-2", f"model.finetune={mode}", "model.lora_rank=2", f"run.runs_dir={tmp_path}"])
    run, report = engine.train(sentiment.RECIPE, cfg, verbose=0, export=False)
    pretrained, _ = load_backbone(str(tiny_bert))
    backbone = load_backbone(str(tiny_bert))[0]
    set_finetune_mode(backbone, mode, cfg.model.lora_rank)
    model = text_classifier(backbone, 2, cfg.model.dropout, cfg.model.pooling)
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
        others = [v.path for v in model.trainable_variables if "lora" not in v.path and "logits" not in v.path]
        assert others and all(p.endswith(("query/bias", "value/bias")) for p in others), others
    else:
        assert {v.path.split("/")[0] for v in model.trainable_variables} == {"logits"}
    assert report["validation"]["num_examples"] == 10  # 10% of 96, stratified
    keras.backend.clear_session()


def test_a_diverging_run_stops_with_a_clear_message(tiny_bert, tmp_path):
    from tests.conftest import run_cli

    train = write_jsonl(tmp_path / "train.jsonl", make_reviews(64, seed=6))
    result = run_cli("train", "sentiment", "--runs-dir", str(tmp_path), "--set", f"model.backbone={tiny_bert}",
                     "--set", f"data.train={train}", "--set", "data.validation=", "--set", "train.epochs=2",
                     "--set", "train.learning_rate=1e30", "--set", "train.clipnorm=0", "--set", "train.warmup_ratio=0")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("keras-zoo")]
    assert len(errors) == 1 and "training diverged: the loss became NaN/Inf" in errors[0], result.stderr[-2000:]
