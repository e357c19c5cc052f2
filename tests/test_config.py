import pytest
import yaml

from recipes.engine.config import load_config, save_config
from recipes.sentiment.recipe import SentimentConfig
from zoo.errors import UserError


def test_defaults_yaml_and_overrides_apply_in_order(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  learning_rate: 3e-5\n  epochs: 5\nmodel:\n  finetune: lora\n")
    cfg = load_config(SentimentConfig, path, ["train.epochs=1", "data.max_length=64"])
    assert cfg.train.learning_rate == 3e-5  # YAML's '3e-5' (a string to PyYAML) becomes a float
    assert cfg.train.epochs == 1  # --set beats the file
    assert cfg.model.finetune == "lora"
    assert cfg.data.max_length == 64
    assert cfg.train.batch_size == SentimentConfig().train.batch_size


def test_unknown_key_suggests_the_right_one():
    with pytest.raises(
        UserError, match=r"unknown config key 'train.learnig_rate'.*'train.learning_rate'"
    ):
        load_config(SentimentConfig, overrides=["train.learnig_rate=1e-4"])
    with pytest.raises(UserError, match=r"unknown config key 'trian'"):
        load_config(SentimentConfig, overrides=["trian.epochs=1"])


def test_unknown_key_in_yaml_names_the_file(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("data:\n  txt_column: review\n")
    with pytest.raises(
        UserError, match=r"bad.yaml: unknown config key 'data.txt_column'.*'data.text_column'"
    ):
        load_config(SentimentConfig, path)


@pytest.mark.parametrize(
    "override, message",
    [
        ("train.epochs=two", "'train.epochs' must be int"),
        ("model.finetune=partial", "'model.finetune' must be one of full, frozen, lora"),
        ("train=3", "'train' is a section"),
        ("train.epochs", "expected KEY=VALUE"),
    ],
)
def test_bad_values_are_rejected(override, message):
    with pytest.raises(UserError, match=message):
        load_config(SentimentConfig, overrides=[override])


def test_saved_config_round_trips(tmp_path):
    cfg = load_config(SentimentConfig, overrides=["train.learning_rate=2e-5", "model.pooling=cls"])
    save_config(cfg, tmp_path / "config.yaml")
    assert yaml.safe_load((tmp_path / "config.yaml").read_text())["train"]["learning_rate"] == 2e-5
    assert load_config(SentimentConfig, tmp_path / "config.yaml") == cfg


def test_missing_config_file():
    with pytest.raises(UserError, match="nope.yaml: config file not found"):
        load_config(SentimentConfig, "nope.yaml")


def test_a_bare_yaml_off_is_the_choice_off(tmp_path):
    from recipes.ner.recipe import NerConfig

    path = tmp_path / "c.yaml"
    path.write_text("data:\n  document_context: off\n")  # YAML 1.1: the boolean False
    assert load_config(NerConfig, path).data.document_context == "off"
    path.write_text("data:\n  document_context: on\n")  # True: no choice is called "on"
    with pytest.raises(
        UserError, match="'data.document_context' must be one of mixed, full, off, not True"
    ):
        load_config(NerConfig, path)
