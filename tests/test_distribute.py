"""Training beyond one device: strategy choice, precision per device kind, and every recipe trained
with MirroredStrategy (two logical CPU devices) and MultiWorkerMirroredStrategy (two processes on
127.0.0.1), each compared with one-device training on the same data in the same order.

Sizes are chosen so that every global batch splits evenly over two replicas, dropout is off (the
tiny BERTs are saved without it) and augmentation is off: the first epoch's loss must then match
one device to 1e-4 relative.
"""

from __future__ import annotations

import csv
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import (FILLER, NEGATIVE, POSITIVE, ROOT, make_image_folder, make_ner_sentences, ner_vocabulary,
                      review_vocabulary, run_cli, save_tiny_bert, write_conll, write_jsonl)
from recipes import devices, distribute
from recipes.devices import Devices
from recipes.launch import without_option, worker_environments
from recipes.run_dir import RunPlan, plan_run
from zoo.errors import UserError

RECIPES = ("sentiment", "image_classification", "ner")


# ------------------------------------------------------------------------------ device kinds (mocked)
@pytest.mark.parametrize("found, precision, xla", [
    (Devices(gpus=((9, 0),)), "mixed_bfloat16", True),  # Hopper
    (Devices(gpus=((8, 0), (8, 6))), "mixed_bfloat16", True),  # Ampere
    (Devices(gpus=((7, 5),)), "mixed_float16", True),  # Turing
    (Devices(gpus=((7, 0),)), "mixed_float16", True),  # Volta
    (Devices(gpus=((6, 1),)), "float32", False),  # Pascal
    (Devices(gpus=((8, 0), (7, 0))), "mixed_float16", True),  # mixed cards: the weakest decides
    (Devices(cpu_flags=frozenset({"avx2", "avx512_bf16"})), "mixed_bfloat16", False),
    (Devices(cpu_flags=frozenset({"amx_bf16", "amx_tile"})), "mixed_bfloat16", False),
    (Devices(cpu_flags=frozenset({"avx2", "fma"})), "float32", False),
    (Devices(), "float32", False),
])
def test_auto_precision_and_xla_for_every_device_kind(found, precision, xla):
    assert devices.resolve_precision("auto", found) == precision
    assert devices.resolve_jit_compile("auto", found) is xla
    assert devices.resolve_precision("float32", found) == "float32"  # explicit settings stay
    assert devices.resolve_jit_compile(False, found) is False
    assert devices.resolve_jit_compile(True, found) is True
    # The image recipe (EfficientNet trains slower in bf16 on CPUs) keeps float32 on CPUs only.
    from recipes.image_classification import ImageTrainConfig
    assert devices.resolve_precision("auto", found, ImageTrainConfig.CPU_BF16) == (
        precision if found.gpus else "float32")


def test_local_devices_reads_each_gpus_compute_capability(monkeypatch):
    import tensorflow as tf

    gpus = [tf.config.PhysicalDevice("/physical_device:GPU:0", "GPU"),
            tf.config.PhysicalDevice("/physical_device:GPU:1", "GPU")]
    details = {gpus[0]: {"compute_capability": (8, 6)}, gpus[1]: {"compute_capability": (7, 5)}}
    monkeypatch.setattr(tf.config, "list_physical_devices", lambda kind=None: gpus if kind == "GPU" else [])
    monkeypatch.setattr(tf.config.experimental, "get_device_details", lambda device: details[device])
    found = devices.local_devices()
    assert found.gpus == ((8, 6), (7, 5)) and found.slowest_gpu == (7, 5)
    assert devices.resolve_precision("auto", found) == "mixed_float16"


def test_mixed_float16_compiles_with_loss_scaling():
    import keras

    from recipes import training
    from recipes.config import TrainConfig

    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
        training.compile_classifier(model, TrainConfig(jit_compile=False), steps_per_epoch=10)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)


# --------------------------------------------------------------------------------- strategy choice
def tf_config(index: int, workers: int = 2, chief: bool = False) -> dict:
    cluster = {"worker": [f"127.0.0.1:{2000 + i}" for i in range(workers)]}
    if chief:
        cluster["chief"] = ["127.0.0.1:1999"]
    return {"TF_CONFIG": json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})}


def test_auto_picks_the_strategy_from_gpus_and_tf_config():
    alone = distribute.Cluster()
    assert distribute.resolve_distribute("auto", 0, alone) == "none"
    assert distribute.resolve_distribute("auto", 1, alone) == "none"
    assert distribute.resolve_distribute("auto", 2, alone) == "mirrored"
    cluster = distribute.cluster_from_environment(tf_config(1))
    assert distribute.resolve_distribute("auto", 8, cluster) == "multi_worker"
    assert distribute.resolve_distribute("mirrored", 1, alone) == "mirrored"
    with pytest.raises(UserError, match="multi_worker needs TF_CONFIG"):
        distribute.resolve_distribute("multi_worker", 0, alone)
    with pytest.raises(UserError, match="TF_CONFIG names a cluster of 2 processes"):
        distribute.resolve_distribute("none", 0, cluster)


def test_tf_config_says_who_is_chief_and_refuses_what_is_not_supported():
    assert distribute.cluster_from_environment({}) == distribute.Cluster()
    assert distribute.cluster_from_environment(tf_config(0)).is_chief
    assert not distribute.cluster_from_environment(tf_config(1)).is_chief
    assert not distribute.cluster_from_environment(tf_config(0, chief=True)).is_chief  # the chief task is
    chief = {"TF_CONFIG": json.dumps({"cluster": {"chief": ["a:1"], "worker": ["b:1"]}, "task": {"type": "chief"}})}
    assert distribute.cluster_from_environment(chief).is_chief and distribute.cluster_from_environment(chief).tasks == 2
    for environment, message in [
        ({"TF_CONFIG": "{not json"}, "TF_CONFIG: not a cluster description"),
        ({"TF_CONFIG": json.dumps({"cluster": {"ps": ["a:1"], "worker": ["b:1"]}, "task": {"type": "worker"}})},
         "task types ps are not supported"),
        (tf_config(5), "task 'worker' 5 is not in the cluster"),
    ]:
        with pytest.raises(UserError, match=message):
            distribute.cluster_from_environment(environment)


def test_local_workers_get_one_gpu_each_and_their_own_task():
    envs = worker_environments(3, gpus=2, base={"PATH": "/bin"}, ports=[7001, 7002, 7003])
    assert [e["CUDA_VISIBLE_DEVICES"] for e in envs] == ["0", "1", "0"]
    tasks = [json.loads(e["TF_CONFIG"]) for e in envs]
    assert [t["task"]["index"] for t in tasks] == [0, 1, 2]
    assert tasks[2]["cluster"]["worker"] == ["127.0.0.1:7001", "127.0.0.1:7002", "127.0.0.1:7003"]
    no_gpu = worker_environments(2, gpus=0, base={"CUDA_VISIBLE_DEVICES": "3"})  # as tune --workers starts them
    assert [e["CUDA_VISIBLE_DEVICES"] for e in no_gpu] == ["3", "3"] and "TF_CONFIG" not in no_gpu[0]
    assert without_option(["train", "ner", "--workers", "2", "--set", "a=1", "--workers=3"], "--workers") == [
        "train", "ner", "--set", "a=1"]


def test_learning_rate_scales_only_when_asked():
    assert distribute.scaled_learning_rate(1e-4, "none", 8) == 1e-4
    assert distribute.scaled_learning_rate(1e-4, "linear", 8) == pytest.approx(8e-4)


def test_token_loss_is_the_global_batchs_mean_whatever_the_split():
    """NER's per-token weights make two replicas' losses add up to the one-device loss even when
    their halves of the batch hold different numbers of scored tokens."""
    import numpy as np
    import tensorflow as tf

    from zoo.token_inputs import token_loss_weights

    rng = np.random.default_rng(0)
    labels = rng.integers(0, 5, (4, 6)).astype("int32")
    labels[:2, 2:] = -1  # the first half scores 4 tokens, the second 12
    logits = rng.normal(size=(4, 6, 5)).astype("float32")
    per_token = tf.keras.losses.sparse_categorical_crossentropy(np.maximum(labels, 0), logits, from_logits=True)
    scored = labels >= 0
    one_device = float(tf.reduce_sum(per_token[scored]) / scored.sum())
    clean, weights = token_loss_weights(tf.constant(labels))
    assert (clean.numpy() >= 0).all()

    def keras_mean(rows):  # Keras's sum_over_batch_size on one replica's rows
        return float(tf.reduce_sum(per_token[rows] * weights[rows]) / tf.cast(tf.size(weights[rows]), tf.float32))

    assert keras_mean(slice(0, 4)) == pytest.approx(one_device, rel=1e-6)
    two_replicas = (keras_mean(slice(0, 2)) + keras_mean(slice(2, 4))) / 2  # Keras scales by 1 / replicas
    assert two_replicas == pytest.approx(one_device, rel=1e-6)


def test_resume_auto_continues_an_interrupted_run_and_starts_a_missing_one(tmp_path):
    """What a restarted Kubernetes pod runs: the same command, with run.resume=auto."""
    plan = plan_run(str(tmp_path), "toy", "r", resume="auto")
    assert not plan.resume and plan.work == tmp_path / "toy" / "r"
    run = tmp_path / "toy" / "r"
    (run / "checkpoints").mkdir(parents=True)
    (run / "config.yaml").write_text("{}\n")
    (run / "run.json").write_text(json.dumps({"status": "running", "pid": 1}))  # no lock held: interrupted
    assert plan_run(str(tmp_path), "toy", "r", resume="auto").resume
    (run / "run.json").write_text(json.dumps({"status": "finished"}))
    with pytest.raises(UserError, match="run directory exists"):
        plan_run(str(tmp_path), "toy", "r", resume="auto")


# ------------------------------------------------------------------------------ training, two ways
@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """Dropout-free tiny backbones and data whose batches split evenly: 128 reviews of 5 words
    (one length bucket, batches of 16), 2 x 16 images (batches of 8), CoNLL sentences."""
    import keras

    work = tmp_path_factory.mktemp("distribute")
    save_tiny_bert(review_vocabulary(), work / "bert", dropout=0.0)
    keras.utils.set_random_seed(0)
    save_tiny_bert(ner_vocabulary(), work / "ner_bert", dropout=0.0)
    rng = random.Random(1)
    reviews = []
    for i in range(160):
        words = rng.sample(FILLER, 4) + [rng.choice(POSITIVE if i % 2 else NEGATIVE)]
        rng.shuffle(words)
        reviews.append({"text": " ".join(words), "label": "positive" if i % 2 else "negative"})
    write_jsonl(work / "train.jsonl", reviews[:128])
    write_jsonl(work / "dev.jsonl", reviews[128:])
    make_image_folder(work / "photos", 16, seed=1)
    make_image_folder(work / "photos_val", 8, seed=2)
    write_conll(work / "ner_train.txt", make_ner_sentences(64, seed=1))
    write_conll(work / "ner_valid.txt", make_ner_sentences(16, seed=2))
    return work


def overrides(recipe: str, data: Path, tiny_image_backbone: Path) -> list[str]:
    common = ["model.dropout=0", "run.tensorboard=false", "run.embeddings=0", "train.jit_compile=false"]
    return common + {
        "sentiment": [f"model.backbone={data / 'bert'}", f"data.train={data / 'train.jsonl'}",
                      f"data.validation={data / 'dev.jsonl'}", "train.epochs=1", "train.batch_size=16",
                      "train.learning_rate=3e-3"],
        "image_classification": [f"model.backbone={tiny_image_backbone}", f"data.train={data / 'photos'}",
                                 f"data.validation={data / 'photos_val'}", "train.head_epochs=1", "train.epochs=1",
                                 "train.batch_size=8", "augment.crop_scale=[1.0, 1.0]", "augment.flip=false"],
        "ner": [f"model.backbone={data / 'ner_bert'}", f"data.train={data / 'ner_train.txt'}",
                f"data.validation={data / 'ner_valid.txt'}", "data.max_length=32", "train.epochs=1",
                "train.batch_size=16", "train.learning_rate=5e-3",
                # One sentence a window: packed windows need not split evenly over the two replicas.
                "data.document_context=off"],
    }[recipe]


@pytest.fixture(scope="module")
def in_process_runs(data, tiny_image_backbone) -> Path:
    """Every recipe trained on one device and with MirroredStrategy over two logical CPU devices,
    in one process (tests/distributed_runs.py): runs/<recipe>/{one_device,mirrored}. Only the
    sentiment runs are exported (the predictions test loads them); exporting the others (SavedModel,
    TFLite) would test nothing of distribution, and the two-worker tests export each recipe."""
    runs = data / "runs"
    spec = {"logical_cpus": 2, "runs": [
        {"recipe": recipe, "export": recipe == "sentiment", "overrides": overrides(recipe, data, tiny_image_backbone) + [
            f"run.runs_dir={runs}", f"run.name={name}", f"train.distribute={kind}"]}
        for recipe in RECIPES for name, kind in (("one_device", "none"), ("mirrored", "mirrored"))]}
    (data / "spec.json").write_text(json.dumps(spec))
    result = subprocess.run([sys.executable, str(ROOT / "tests" / "distributed_runs.py"), str(data / "spec.json")],
                            cwd=ROOT, capture_output=True, text=True, timeout=900,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert result.returncode == 0, result.stderr[-3000:]
    return runs


def history(run: Path) -> list[dict]:
    with (run / "history.csv").open() as f:
        return list(csv.DictReader(f))


def assert_trains_as_one_device(run: Path, reference: Path) -> None:
    """Same first-epoch loss to 1e-4 relative, every epoch logged once, and the same evaluation."""
    rows, expected = history(run), history(reference)
    assert [r["epoch"] for r in rows] == [r["epoch"] for r in expected]
    assert float(rows[0]["loss"]) == pytest.approx(float(expected[0]["loss"]), rel=1e-4)
    assert float(rows[-1]["loss"]) == pytest.approx(float(expected[-1]["loss"]), rel=1e-3)
    got, want = (json.loads((r / "metrics.json").read_text())["validation"] for r in (run, reference))
    for key in ("accuracy", "macro_f1", "f1", "token_accuracy"):
        if key in want:
            assert got[key] == pytest.approx(want[key], abs=1e-6), key
    assert json.loads((run / "run.json").read_text())["status"] == "finished"


@pytest.mark.parametrize("recipe", RECIPES)
def test_mirrored_strategy_trains_each_recipe_as_one_device(in_process_runs, recipe):
    runs = in_process_runs / recipe
    assert_trains_as_one_device(runs / "mirrored", runs / "one_device")
    assert (runs / "mirrored" / "export" / "model.keras").is_file() == (recipe == "sentiment")


def test_mirrored_predictions_match_one_device(in_process_runs):
    from recipes import engine

    texts = ["a wonderful film", "the plot was dull and boring", "lovely acting"]
    one, two = (engine.predict("sentiment", in_process_runs / "sentiment" / name, texts)
                for name in ("one_device", "mirrored"))
    for a, b in zip(one, two):
        assert a["label"] == b["label"]
        for label, p in a["probabilities"].items():
            assert b["probabilities"][label] == pytest.approx(p, abs=1e-4)


# `make test-all` only (1-1.5 minutes each): the default suite keeps a real two-worker cluster in
# test_a_killed_worker_stops_the_cluster_and_resume_finishes_it, and each recipe's cross-replica
# arithmetic in the MirroredStrategy runs above, which share MultiWorkerMirroredStrategy's code path.
@pytest.mark.slow
@pytest.mark.parametrize("recipe", RECIPES)
def test_two_workers_train_each_recipe_as_one_device(in_process_runs, data, tiny_image_backbone, recipe, tmp_path):
    """`keras-zoo train RECIPE --workers 2`: MultiWorkerMirroredStrategy on 127.0.0.1. Only the
    chief's run exists afterwards; the other worker leaves nothing behind."""
    runs = tmp_path / "runs"
    settings = [arg for item in overrides(recipe, data, tiny_image_backbone) for arg in ("--set", item)]
    result = run_cli("train", recipe, "--workers", "2", "--name", "mw", "--runs-dir", str(runs), *settings, timeout=600)
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    assert "[worker 1] this worker's part is done" in result.stdout
    assert_trains_as_one_device(runs / recipe / "mw", in_process_runs / recipe / "one_device")
    assert (runs / recipe / "mw" / "export" / "model.keras").is_file()
    assert sorted(p.name for p in (runs / recipe).iterdir()) == [".mw.lock", "mw"]
    assert f"keras-zoo train {recipe} --workers 2 --name mw" in (runs / recipe / "mw" / "README.md").read_text()
    plan = RunPlan(runs / recipe / "mw", runs / recipe / "mw", resume=False)
    assert not distribute.worker_scratch_path(plan, distribute.Cluster(2, "worker", 1)).exists()


def test_a_killed_worker_stops_the_cluster_and_resume_finishes_it(tmp_path):
    """SIGKILL of worker 1 mid-run: the launcher stops worker 0 and fails within 30 s naming
    worker 1; `--resume` then trains the rest, each epoch logged once."""
    runs = tmp_path / "runs"
    command = [sys.executable, "-m", "keras_zoo_cli", "train", "tests.toy_recipe", "--workers", "2", "--name", "k",
               "--runs-dir", str(runs), "--set", "train.epochs=4", "--set", "run.tensorboard=false"]
    launcher = subprocess.Popen([*command, "--set", "run.seconds_per_batch=0.5"], cwd=ROOT, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)
    pids, lines = [], []
    for line in launcher.stdout:
        lines.append(line)
        if line.startswith("started 2 workers"):
            pids = [int(p) for p in line.split("pids ")[1].split(",")[:2]]
        if line.startswith("[worker 1] toy: epoch 2 batch 3"):  # 3 of the epoch's 8 batches done
            break
    assert pids, "".join(lines)[-3000:]
    os.kill(pids[1], signal.SIGKILL)
    killed = time.monotonic()
    output = launcher.communicate(timeout=60)[0]
    assert launcher.returncode != 0 and time.monotonic() - killed < 30
    assert "keras-zoo: error: worker 1 was killed by SIGKILL" in output
    with pytest.raises(ProcessLookupError):
        os.kill(pids[0], 0)  # the chief is gone too

    result = subprocess.run([*command, "--resume", "--set", "run.seconds_per_batch=0"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    run = runs / "toy" / "k"
    assert [r["epoch"] for r in history(run)] == ["0", "1", "2", "3"]
    assert json.loads((run / "run.json").read_text())["status"] == "finished"


def test_workers_refuse_a_one_process_strategy(tmp_path):
    result = run_cli("train", "tests.toy_recipe", "--workers", "2", "--runs-dir", str(tmp_path),
                     "--set", "train.distribute=none")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == (
        "keras-zoo: error: --workers: train.distribute is none; workers train with multi_worker (or auto)")


def test_config_takes_the_new_training_keys_and_names_bad_values():
    from recipes.registry import load_recipe

    recipe = load_recipe("sentiment")
    cfg = recipe.load_config(overrides=["train.jit_compile=true", "train.distribute=mirrored",
                                        "train.scale_learning_rate=linear", "run.resume=auto"])
    assert (cfg.train.jit_compile, cfg.train.distribute, cfg.train.scale_learning_rate, cfg.run.resume) == (
        True, "mirrored", "linear", "auto")
    assert recipe.load_config().train.jit_compile == "auto"
    with pytest.raises(UserError, match=r"'train.jit_compile' must be bool or auto, not 'maybe'"):
        recipe.load_config(overrides=["train.jit_compile=maybe"])
    with pytest.raises(UserError, match="'run.resume' must be one of never, auto"):
        recipe.load_config(overrides=["run.resume=always"])
