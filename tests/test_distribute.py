"""Training beyond one device: strategy choice, precision per device kind, and every recipe trained
with MirroredStrategy (two logical CPU devices) and MultiWorkerMirroredStrategy (two processes on
127.0.0.1), each compared with one-device training on the same data in the same order.

Sizes are chosen so that every global batch splits evenly over two replicas, dropout is off (the
tiny BERTs are saved without it) and augmentation is off: the first epoch's loss must then match
one device to the tolerance of the precision the runs trained at (`TOLERANCE`).

Every training comparison runs twice, whatever CPU runs the suite: with `train.precision: auto`
resolved as on a CPU with native bf16 (KERAS_ZOO_CPU_BF16=native: mixed bfloat16 for the text
recipes; the image recipe is set to it) and as on one without (`emulated`: float32).
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

from recipes.engine import devices, distribute
from recipes.engine.devices import Devices
from recipes.engine.launch import without_option, worker_environments
from recipes.engine.run_dir import RunPlan, plan_run
from tests.conftest import (
    FILLER,
    NEGATIVE,
    POSITIVE,
    ROOT,
    make_image_folder,
    make_ner_sentences,
    ner_vocabulary,
    review_vocabulary,
    run_cli,
    save_tiny_bert,
    write_conll,
    write_jsonl,
)
from zoo.errors import UserError

RECIPES = ("sentiment", "image_classification", "ner")
# What two trainings that should agree may differ by, at the precision they trained at: float32
# sums in another order differ in the 5th-6th digit; bfloat16 keeps 8 bits of mantissa (relative
# rounding 2^-9 = 0.2%), and a mirrored step's gradients are summed in another order than one
# device's, so its losses and probabilities differ in the 4th digit (3.6e-4 relative, 1.6e-4
# absolute seen on an AVX512-BF16 EPYC). One extra training step moves them by more than this
# (test_the_bf16_tolerance_still_catches_one_extra_training_step).
TOLERANCE = {"float32": 1e-4, "mixed_bfloat16": 2e-3}
# KERAS_ZOO_CPU_BF16 for each resolution
CPU_BF16 = {
    "float32": "emulated",
    "mixed_bfloat16": "native",
}


# ------------------------------------------------------------------------------ device kinds (mocked)
@pytest.mark.parametrize(
    "found, precision, xla",
    [
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
    ],
)
def test_auto_precision_and_xla_for_every_device_kind(found, precision, xla):
    assert devices.resolve_precision("auto", found) == precision
    assert devices.resolve_jit_compile("auto", found) is xla
    assert devices.resolve_precision("float32", found) == "float32"  # explicit settings stay
    assert devices.resolve_jit_compile(False, found) is False
    assert devices.resolve_jit_compile(True, found) is True
    # The image recipe (EfficientNet trains slower in bf16 on CPUs) keeps float32 on CPUs only.
    from recipes.image_classification.recipe import ImageTrainConfig

    assert devices.resolve_precision("auto", found, ImageTrainConfig.CPU_BF16) == (
        precision if found.gpus else "float32"
    )


def test_local_devices_reads_each_gpus_compute_capability(monkeypatch):
    import tensorflow as tf

    gpus = [
        tf.config.PhysicalDevice("/physical_device:GPU:0", "GPU"),
        tf.config.PhysicalDevice("/physical_device:GPU:1", "GPU"),
    ]
    details = {gpus[0]: {"compute_capability": (8, 6)}, gpus[1]: {"compute_capability": (7, 5)}}
    monkeypatch.setattr(
        tf.config, "list_physical_devices", lambda kind=None: gpus if kind == "GPU" else []
    )
    monkeypatch.setattr(
        tf.config.experimental, "get_device_details", lambda device: details[device]
    )
    found = devices.local_devices()
    assert found.gpus == ((8, 6), (7, 5)) and found.slowest_gpu == (7, 5)
    assert devices.resolve_precision("auto", found) == "mixed_float16"


def test_mixed_float16_compiles_with_loss_scaling():
    import keras

    from recipes.engine import training
    from recipes.engine.config import TrainConfig

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
    return {
        "TF_CONFIG": json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})
    }


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
    assert not distribute.cluster_from_environment(
        tf_config(0, chief=True)
    ).is_chief  # the chief task is
    chief = {
        "TF_CONFIG": json.dumps(
            {"cluster": {"chief": ["a:1"], "worker": ["b:1"]}, "task": {"type": "chief"}}
        )
    }
    assert (
        distribute.cluster_from_environment(chief).is_chief
        and distribute.cluster_from_environment(chief).tasks == 2
    )
    for environment, message in [
        ({"TF_CONFIG": "{not json"}, "TF_CONFIG: not a cluster description"),
        (
            {
                "TF_CONFIG": json.dumps(
                    {"cluster": {"ps": ["a:1"], "worker": ["b:1"]}, "task": {"type": "worker"}}
                )
            },
            "task types ps are not supported",
        ),
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
    # as tune --workers starts them
    no_gpu = worker_environments(2, gpus=0, base={"CUDA_VISIBLE_DEVICES": "3"})
    assert [e["CUDA_VISIBLE_DEVICES"] for e in no_gpu] == ["3", "3"] and "TF_CONFIG" not in no_gpu[
        0
    ]
    assert without_option(
        ["train", "ner", "--workers", "2", "--set", "a=1", "--workers=3"], "--workers"
    ) == ["train", "ner", "--set", "a=1"]


def test_learning_rate_scales_only_when_asked():
    assert distribute.scaled_learning_rate(1e-4, "none", 8) == 1e-4
    assert distribute.scaled_learning_rate(1e-4, "linear", 8) == pytest.approx(8e-4)


def test_token_loss_is_the_global_batchs_mean_whatever_the_split():
    """NER's per-token weights make two replicas' losses add up to the one-device loss even when
    their halves of the batch hold different numbers of scored tokens."""
    import numpy as np
    import tensorflow as tf

    from recipes.ner.token_inputs import token_loss_weights

    rng = np.random.default_rng(0)
    labels = rng.integers(0, 5, (4, 6)).astype("int32")
    labels[:2, 2:] = -1  # the first half scores 4 tokens, the second 12
    logits = rng.normal(size=(4, 6, 5)).astype("float32")
    per_token = tf.keras.losses.sparse_categorical_crossentropy(
        np.maximum(labels, 0), logits, from_logits=True
    )
    scored = labels >= 0
    one_device = float(tf.reduce_sum(per_token[scored]) / scored.sum())
    clean, weights = token_loss_weights(tf.constant(labels))
    assert (clean.numpy() >= 0).all()

    def keras_mean(rows):  # Keras's sum_over_batch_size on one replica's rows
        return float(
            tf.reduce_sum(per_token[rows] * weights[rows])
            / tf.cast(tf.size(weights[rows]), tf.float32)
        )

    assert keras_mean(slice(0, 4)) == pytest.approx(one_device, rel=1e-6)
    two_replicas = (
        keras_mean(slice(0, 2)) + keras_mean(slice(2, 4))
    ) / 2  # Keras scales by 1 / replicas
    assert two_replicas == pytest.approx(one_device, rel=1e-6)


def test_resume_auto_continues_an_interrupted_run_and_starts_a_missing_one(tmp_path):
    """What a restarted Kubernetes pod runs: the same command, with run.resume=auto."""
    plan = plan_run(str(tmp_path), "toy", "r", resume="auto")
    assert not plan.resume and plan.work == tmp_path / "toy" / "r"
    run = tmp_path / "toy" / "r"
    (run / "checkpoints").mkdir(parents=True)
    (run / "config.yaml").write_text("{}\n")
    # no lock held: interrupted
    (run / "run.json").write_text(json.dumps({"status": "running", "pid": 1}))
    assert plan_run(str(tmp_path), "toy", "r", resume="auto").resume
    (run / "run.json").write_text(json.dumps({"status": "finished"}))
    with pytest.raises(
        UserError, match="a finished run of this name is there; --overwrite replaces it"
    ):
        # the hint fits the run: no --resume for a finished one
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
    extra = [
        {
            "text": " ".join(rng.sample(FILLER, 4) + [rng.choice(POSITIVE if i % 2 else NEGATIVE)]),
            "label": "positive" if i % 2 else "negative",
        }
        for i in range(16)
    ]
    # one more step an epoch
    write_jsonl(work / "train_plus_one_batch.jsonl", reviews[:128] + extra)
    make_image_folder(work / "photos", 16, seed=1)
    make_image_folder(work / "photos_val", 8, seed=2)
    make_image_folder(work / "photos_val17", 9, seed=3)
    next((work / "photos_val17" / "red").iterdir()).unlink()  # 17 images
    write_conll(work / "ner_train.txt", make_ner_sentences(64, seed=1))
    write_conll(work / "ner_valid.txt", make_ner_sentences(16, seed=2))
    return work


def overrides(recipe: str, data: Path, tiny_image_backbone: Path) -> list[str]:
    common = [
        "model.dropout=0",
        "run.tensorboard=false",
        "run.embeddings=0",
        "train.jit_compile=false",
    ]
    return (
        common
        + {
            "sentiment": [
                f"model.backbone={data / 'bert'}",
                f"data.train={data / 'train.jsonl'}",
                f"data.validation={data / 'dev.jsonl'}",
                "train.epochs=1",
                "train.batch_size=16",
                "train.learning_rate=3e-3",
            ],
            "image_classification": [
                f"model.backbone={tiny_image_backbone}",
                f"data.train={data / 'photos'}",
                f"data.validation={data / 'photos_val'}",
                "train.head_epochs=1",
                "train.epochs=1",
                "train.batch_size=8",
                "augment.crop_scale=[1.0, 1.0]",
                "augment.flip=false",
            ],
            "ner": [
                f"model.backbone={data / 'ner_bert'}",
                f"data.train={data / 'ner_train.txt'}",
                f"data.validation={data / 'ner_valid.txt'}",
                "data.max_length=32",
                "train.epochs=1",
                "train.batch_size=16",
                "train.learning_rate=5e-3",
                # One sentence a window: packed windows need not split evenly over the two replicas.
                "data.document_context=off",
            ],
        }[recipe]
    )


@pytest.fixture(scope="module", params=["float32", "mixed_bfloat16"])
def in_process_runs(request, data, tiny_image_backbone) -> Path:
    """Every recipe trained on one device and with MirroredStrategy over two logical CPU devices,
    in one process (tests/distributed_runs.py), at the param's precision: runs/<recipe>/{one_device,
    mirrored}, plus the sentiment recipe trained again (`again`, the same seed) and with one more
    batch of training data (`one_more_step`). `auto` resolves the text recipes' precision
    (KERAS_ZOO_CPU_BF16); the image recipe, whose `auto` is float32 on every CPU, is set to it.
    Every run saves model.keras (what predict loads), none the SavedModel: exporting tests nothing
    of distribution, and the two-worker tests export each recipe."""
    precision = request.param
    runs = data / "runs" / precision
    image = [f"train.precision={precision}"]
    spec = {
        "logical_cpus": 2,
        "runs": [
            {
                "recipe": recipe,
                "overrides": overrides(recipe, data, tiny_image_backbone)
                + [
                    f"run.runs_dir={runs}",
                    f"run.name={name}",
                    f"train.distribute={kind}",
                    "run.export=false",
                    *(image if recipe == "image_classification" else []),
                ],
            }
            for recipe in RECIPES
            for name, kind in (("one_device", "none"), ("mirrored", "mirrored"))
        ],
    }
    for name, train in (("again", "train.jsonl"), ("one_more_step", "train_plus_one_batch.jsonl")):
        spec["runs"].append(
            {
                "recipe": "sentiment",
                "overrides": overrides("sentiment", data, tiny_image_backbone)
                + [
                    f"run.runs_dir={runs}",
                    f"run.name={name}",
                    "train.distribute=none",
                    "run.export=false",
                    f"data.train={data / train}",
                ],
            }
        )
    if precision == "float32":  # the speedups switch, on against off (test_the_speedups_switch_...)
        for recipe in RECIPES:
            frozen = ["model.freeze_embeddings=true"] if recipe != "image_classification" else []
            for name, switch in (
                ("speedups_off", []),
                ("frozen_on", frozen),
                ("frozen_off", frozen),
            ):
                if name != "speedups_off" and not frozen:
                    continue
                spec["runs"].append(
                    {
                        "recipe": recipe,
                        "freeze_all_embeddings": bool(switch),
                        "overrides": overrides(recipe, data, tiny_image_backbone)
                        + [
                            f"run.runs_dir={runs}",
                            f"run.name={name}",
                            "train.distribute=none",
                            "run.export=false",
                            *image,
                            *switch,
                            f"train.speedups={'false' if name.endswith('off') else 'true'}",
                        ],
                    }
                )
    for name, kind in (("frozen_one_device", "none"), ("frozen_mirrored", "mirrored")):
        spec["runs"].append(  # a frozen image head on features computed once, under each strategy
            {
                "recipe": "image_classification",
                "overrides": overrides("image_classification", data, tiny_image_backbone)
                + [
                    f"run.runs_dir={runs}",
                    f"run.name={name}",
                    f"train.distribute={kind}",
                    "run.export=false",
                    *image,
                    "model.finetune=frozen",
                    "train.frozen_epochs=1",
                    "train.head_learning_rate=1e-2",
                    # 17 validation images in batches of 8: the features' last batch, of one, leaves
                    # a replica none; training's 32 split evenly (so one device's arithmetic holds)
                    f"data.validation={data / 'photos_val17'}",
                ],
            }
        )
    (data / f"spec_{precision}.json").write_text(json.dumps(spec))
    result = subprocess.run(
        [
            sys.executable,
            str(ROOT / "tests" / "distributed_runs.py"),
            str(data / f"spec_{precision}.json"),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
        env={**os.environ, "PYTHONPATH": str(ROOT), "KERAS_ZOO_CPU_BF16": CPU_BF16[precision]},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    for recipe in RECIPES:  # the run says what it trained at
        assert runtime(runs / recipe / "one_device")["precision"] == precision
    return runs


def runtime(run: Path) -> dict:
    return json.loads((run / "run.json").read_text())["runtime"]


def history(run: Path) -> list[dict]:
    with (run / "history.csv").open() as f:
        return list(csv.DictReader(f))


def assert_trains_as_one_device(run: Path, reference: Path) -> None:
    """Same first-epoch loss and validation loss to the precision's tolerance, every epoch logged
    once, and the same evaluation."""
    rows, expected = history(run), history(reference)
    precision = runtime(reference)["precision"]
    assert runtime(run)["precision"] == precision
    tolerance = TOLERANCE[precision]
    assert [r["epoch"] for r in rows] == [r["epoch"] for r in expected]
    for key in ("loss", "val_loss"):  # NER validates by entity F1 only
        if key in expected[0]:
            assert float(rows[0][key]) == pytest.approx(float(expected[0][key]), rel=tolerance), (
                key,
                precision,
            )
    assert float(rows[-1]["loss"]) == pytest.approx(float(expected[-1]["loss"]), rel=10 * tolerance)
    got, want = (
        json.loads((r / "metrics.json").read_text())["validation"] for r in (run, reference)
    )
    for key in ("accuracy", "macro_f1", "f1", "token_accuracy"):
        if key in want:
            assert got[key] == pytest.approx(want[key], abs=1e-6), key
    assert json.loads((run / "run.json").read_text())["status"] == "finished"


def test_a_frozen_head_on_features_computed_once_trains_under_mirrored_as_on_one_device(
    in_process_runs,
):
    """The features are computed inside the strategy's scope (a traced call per batch, not Keras's
    `predict`, whose distributed step fails on a replica's empty share of the last batch)."""
    runs = in_process_runs / "image_classification"
    assert_trains_as_one_device(runs / "frozen_mirrored", runs / "frozen_one_device")
    assert runtime(runs / "frozen_mirrored")["replicas"] == 2


@pytest.mark.parametrize("recipe", RECIPES)
def test_mirrored_strategy_trains_each_recipe_as_one_device(in_process_runs, recipe):
    runs = in_process_runs / recipe
    assert_trains_as_one_device(runs / "mirrored", runs / "one_device")
    assert (
        runtime(runs / "mirrored")["strategy"] == "MirroredStrategy"
        and runtime(runs / "mirrored")["replicas"] == 2
    )
    assert (
        runtime(runs / "one_device")["strategy"] == "none"
        and runtime(runs / "one_device")["replicas"] == 1
    )


def test_mirrored_predictions_match_one_device(in_process_runs):
    from recipes import engine

    tolerance = TOLERANCE[runtime(in_process_runs / "sentiment" / "one_device")["precision"]]
    texts = ["a wonderful film", "the plot was dull and boring", "lovely acting"]
    one, two = (
        engine.predict("sentiment", in_process_runs / "sentiment" / name, texts)
        for name in ("one_device", "mirrored")
    )
    for a, b in zip(one, two):
        assert a["label"] == b["label"]
        for label, p in a["probabilities"].items():
            assert b["probabilities"][label] == pytest.approx(p, abs=tolerance)


def test_the_same_seed_trains_the_same_run(in_process_runs):
    """Reproducibility at either precision: the same config trained twice in one process gives the
    same losses and validation figures to 4 decimals."""
    runs = in_process_runs / "sentiment"
    first, again = history(runs / "one_device"), history(runs / "again")
    for a, b in zip(first, again):
        for key in ("loss", "val_loss", "val_accuracy"):
            assert round(float(a[key]), 4) == round(float(b[key]), 4), key
    got, want = (
        json.loads((runs / name / "metrics.json").read_text())["validation"]
        for name in ("again", "one_device")
    )
    assert round(got["accuracy"], 4) == round(want["accuracy"], 4)


def test_the_tolerance_still_catches_one_extra_training_step(in_process_runs):
    """The precision's tolerance is loose enough for a mirrored run and tight enough to tell a run
    that took one more optimizer step: its validation loss and its probabilities differ by more."""
    from recipes import engine

    runs = in_process_runs / "sentiment"
    tolerance = TOLERANCE[runtime(runs / "one_device")["precision"]]
    base, extra = history(runs / "one_device")[0], history(runs / "one_more_step")[0]
    assert float(extra["val_loss"]) != pytest.approx(float(base["val_loss"]), rel=tolerance)
    texts = ["a wonderful film", "the plot was dull and boring", "lovely acting"]
    one, more = (
        engine.predict("sentiment", runs / name, texts) for name in ("one_device", "one_more_step")
    )
    gap = max(
        abs(a["probabilities"][k] - b["probabilities"][k])
        for a, b in zip(one, more)
        for k in a["probabilities"]
    )
    assert gap > tolerance


def test_the_speedups_switch_changes_no_arithmetic_but_the_sparse_embedding_updates(
    in_process_runs, data
):
    """`train.speedups: false` (Keras's AdamW) against the default (zoo's fused AdamW), at float32:
    the first epoch's losses agree to float32 tolerance for the image recipe, and for the text
    recipes with their embedding lookups frozen (word and segment embeddings: their gradients are
    sparse). Those are compared apart, since the two optimizers differ there by design: zoo's sums a
    token's gradients in a batch before Adam's moments, as the dense gradient and PyTorch do, Keras's
    gives a repeated token the sum of its squared gradients as second moment. A row whose token never
    occurs only decays, the same in both."""
    import keras
    import numpy as np

    if runtime(in_process_runs / "sentiment" / "one_device")["precision"] != "float32":
        pytest.skip("compared at float32 (the float32 param of this module runs it)")
    pairs = {
        "image_classification": ("one_device", "speedups_off"),
        "sentiment": ("frozen_on", "frozen_off"),
        "ner": ("frozen_on", "frozen_off"),
    }
    for recipe, (on, off) in pairs.items():
        assert (
            runtime(in_process_runs / recipe / on)["speedups"]
            and not runtime(in_process_runs / recipe / off)["speedups"]
        )
        a, b = history(in_process_runs / recipe / on)[0], history(in_process_runs / recipe / off)[0]
        for key in ("loss", "val_loss"):
            if key in a:
                assert float(b[key]) == pytest.approx(float(a[key]), rel=TOLERANCE["float32"]), (
                    recipe,
                    key,
                )

    def word_embeddings(path: Path) -> np.ndarray:
        model = keras.saving.load_model(path, compile=False)
        return next(
            w for w in model.weights if "token_embedding" in w.path and w.shape[0] > 50
        ).numpy()

    vocabulary = review_vocabulary()
    used = {
        vocabulary.index(w)
        for line in (data / "train.jsonl").read_text().splitlines()
        for w in json.loads(line)["text"].split()
    } | {vocabulary.index(t) for t in ("[CLS]", "[SEP]")}
    unused, used = sorted(set(range(len(vocabulary))) - used - {0}), sorted(used)
    # never trained
    start = word_embeddings(in_process_runs / "sentiment" / "frozen_on" / "export" / "model.keras")
    fused, plain = (
        word_embeddings(in_process_runs / "sentiment" / name / "export" / "model.keras")
        for name in ("one_device", "speedups_off")
    )
    assert len(unused) > 50
    # weight decay alone
    np.testing.assert_allclose(fused[unused], plain[unused], rtol=1e-5, atol=1e-7)
    assert np.abs(fused[unused] - start[unused]).max() > 0
    for trained in (fused, plain):
        assert np.abs(trained[used] - start[used]).max(axis=1).min() > 0  # every token seen moved
    # repeated tokens: the moments differ by design
    assert np.abs(fused[used] - plain[used]).max() > 1e-4


def test_the_artefacts_load_without_keras_zoo_in_one_fresh_process(in_process_runs):
    """At either training precision, in one fresh process without keras-zoo (two tests merged, to
    pay one TensorFlow start-up): `keras-zoo export` of the one-device sentiment run, served by
    TensorFlow and tensorflow-text alone, gives `predict`'s probabilities; then every recipe's
    `model.keras` loads with `keras.saving.load_model(path)` (default arguments, keras and keras_hub
    only) and gives the engine's model's outputs, and holds no training optimizer."""
    import keras
    import numpy as np

    from recipes import engine

    run = in_process_runs / "sentiment" / "one_device"
    engine.export("sentiment", run)
    texts = ["a wonderful film", "the plot was dull and boring", "lovely acting", "the story"]
    expected = np.array(
        [
            [r["probabilities"][k] for k in ("negative", "positive")]
            for r in engine.predict("sentiment", run, texts)
        ]
    )
    script = """
import json, sys
import numpy as np, tensorflow as tf, tensorflow_text
given = json.loads(sys.stdin.read())
serve = tf.saved_model.load(given["saved_model"]).signatures["serving_default"]
served = serve(text=tf.constant(given["texts"]))["probabilities"].numpy().tolist()
assert not any(m.split(".")[0] in ("keras_hub", "zoo", "recipes") for m in sys.modules)
import keras, keras_hub
out = {}
for name, path in given["models"].items():
    model = keras.saving.load_model(path)
    inputs = {k: np.ones([2, *[d or 8 for d in v.shape[1:]]], v.dtype) for k, v in
              (model.input.items() if isinstance(model.input, dict) else [("x", model.input)])}
    if not isinstance(model.input, dict):
        inputs = inputs["x"]
    out[name] = np.asarray(model.predict(inputs, verbose=0), "float64").tolist()
assert not [m for m in sys.modules if m.split(".")[0] in ("zoo", "recipes", "tuning", "keras_zoo_cli", "tests")]
print(json.dumps({"served": served, "models": out}))
"""
    paths = {
        recipe: str(in_process_runs / recipe / "one_device" / "export" / "model.keras")
        for recipe in RECIPES
    }
    given = {"saved_model": str(run / "export" / "saved_model"), "texts": texts, "models": paths}
    result = subprocess.run(
        [sys.executable, "-c", script],
        input=json.dumps(given),
        capture_output=True,
        text=True,
        cwd="/",
        timeout=300,
        env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    outputs = json.loads(result.stdout.strip().splitlines()[-1])
    np.testing.assert_allclose(outputs["served"], expected, atol=1e-5)
    for recipe, path in paths.items():
        model = keras.saving.load_model(path, compile=False)  # as the engine loads it for predict
        inputs = {
            k: np.ones([2, *[d or 8 for d in v.shape[1:]]], v.dtype)
            for k, v in (
                model.input.items() if isinstance(model.input, dict) else [("x", model.input)]
            )
        }
        expected = model.predict(
            inputs if isinstance(model.input, dict) else inputs["x"], verbose=0
        )
        np.testing.assert_allclose(outputs["models"][recipe], expected, atol=1e-5)
        config = __import__("zipfile").ZipFile(path).read("config.json").decode()
        # no training optimizer in the file
        assert not json.loads(config).get("compile_config"), recipe
        assert "keras_zoo" not in config and "AdamW" not in config, recipe


# `make test-all` only (1-1.5 minutes each): the default suite keeps a real two-worker cluster in
# test_a_killed_worker_stops_the_cluster_and_resume_finishes_it, and each recipe's cross-replica
# arithmetic in the MirroredStrategy runs above, which share MultiWorkerMirroredStrategy's code path.
@pytest.mark.slow
@pytest.mark.parametrize("recipe", RECIPES)
def test_two_workers_train_each_recipe_as_one_device(
    in_process_runs, data, tiny_image_backbone, recipe, tmp_path
):
    """`keras-zoo train RECIPE --workers 2`: MultiWorkerMirroredStrategy on 127.0.0.1. Only the
    chief's run exists afterwards; the other worker leaves nothing behind."""
    runs = tmp_path / "runs"
    settings = [
        arg for item in overrides(recipe, data, tiny_image_backbone) for arg in ("--set", item)
    ]
    precision = runtime(in_process_runs / recipe / "one_device")["precision"]
    if recipe == "image_classification":
        settings += ["--set", f"train.precision={precision}"]
    result = run_cli(
        "train",
        recipe,
        "--workers",
        "2",
        "--name",
        "mw",
        "--runs-dir",
        str(runs),
        *settings,
        timeout=600,
        env={"KERAS_ZOO_CPU_BF16": CPU_BF16[precision]},
    )
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    assert "[worker 1] this worker's part is done" in result.stdout
    assert_trains_as_one_device(runs / recipe / "mw", in_process_runs / recipe / "one_device")
    assert (runs / recipe / "mw" / "export" / "model.keras").is_file()
    assert sorted(p.name for p in (runs / recipe).iterdir()) == [".mw.lock", "mw"]
    assert (
        f"keras-zoo train {recipe} --workers 2 --name mw"
        in (runs / recipe / "mw" / "README.md").read_text()
    )
    plan = RunPlan(runs / recipe / "mw", runs / recipe / "mw", resume=False)
    assert not distribute.worker_scratch_path(plan, distribute.Cluster(2, "worker", 1)).exists()


def test_a_killed_worker_stops_the_cluster_and_resume_finishes_it(tmp_path):
    """SIGKILL of worker 1 mid-run: the launcher stops worker 0 and fails within 30 s naming
    worker 1; `--resume` then trains the rest, each epoch logged once."""
    runs = tmp_path / "runs"
    command = [
        sys.executable,
        "-m",
        "keras_zoo_cli",
        "train",
        "tests.toy_recipe",
        "--workers",
        "2",
        "--name",
        "k",
        "--runs-dir",
        str(runs),
        "--set",
        "train.epochs=4",
        "--set",
        "run.tensorboard=false",
    ]
    launcher = subprocess.Popen(
        [*command, "--set", "run.seconds_per_batch=0.5"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
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

    result = subprocess.run(
        [*command, "--resume", "--set", "run.seconds_per_batch=0"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    run = runs / "toy" / "k"
    assert [r["epoch"] for r in history(run)] == ["0", "1", "2", "3"]
    assert json.loads((run / "run.json").read_text())["status"] == "finished"


def test_workers_refuse_a_one_process_strategy(tmp_path):
    from tests.conftest import cli_here

    result = cli_here(
        "train",
        "tests.toy_recipe",
        "--workers",
        "2",
        "--runs-dir",
        str(tmp_path),
        "--set",
        "train.distribute=none",
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == (
        "keras-zoo: error: --workers: train.distribute is none; workers train with multi_worker (or auto)"
    )


def test_config_takes_the_new_training_keys_and_names_bad_values():
    from recipes.engine.registry import load_recipe

    recipe = load_recipe("sentiment")
    cfg = recipe.load_config(
        overrides=[
            "train.jit_compile=true",
            "train.distribute=mirrored",
            "train.scale_learning_rate=linear",
            "run.resume=auto",
        ]
    )
    assert (
        cfg.train.jit_compile,
        cfg.train.distribute,
        cfg.train.scale_learning_rate,
        cfg.run.resume,
    ) == (True, "mirrored", "linear", "auto")
    assert recipe.load_config().train.jit_compile == "auto"
    with pytest.raises(UserError, match=r"'train.jit_compile' must be bool or auto, not 'maybe'"):
        recipe.load_config(overrides=["train.jit_compile=maybe"])
    with pytest.raises(UserError, match="'run.resume' must be one of never, auto"):
        recipe.load_config(overrides=["run.resume=always"])
