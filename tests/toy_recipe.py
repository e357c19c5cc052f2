"""A recipe small enough for the search and lifecycle tests: two classes of generated 2-D points, a one-layer MLP.

It follows the recipe contract (recipes/engine/contract.py) like the real recipes, so the engine trains
it exactly as them (checks, run directory and status, resume, best checkpoint, report, HParams
session, export), in a second or two per run; the tests can run many trials, kill searches and
runs, and start workers. `keras-zoo tune tests.toy_recipe` finds it by import path. Knobs that
exist only for the tests: `run.seconds_per_epoch` slows an epoch's end down and
`run.seconds_per_batch` each training batch (so a test can kill it part-way), `run.seconds_to_read` and `run.seconds_to_export` slow those steps down the same way
(each prints a line first, for the test to wait on), and `model.fail_on_units` makes a run fail.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from recipes.common.metrics import classification_report
from recipes.engine.config import RunConfig, TrainConfig, TuningConfig
from recipes.engine.contract import Evaluation, Phase, Recipe, Training
from zoo.errors import UserError


@dataclass
class ToyDataConfig:
    examples: int = 256
    noise: float = 0.8


@dataclass
class ToyModelConfig:
    units: int = 8
    dropout: float = 0.0
    fail_on_units: int = -1  # a run with this many units fails with a user error


@dataclass
class ToyTrainConfig(TrainConfig):
    epochs: int = 3
    learning_rate: float = 1e-2
    warmup_ratio: float = 0.0
    early_stopping_patience: int = 0
    precision: str = "float32"
    run_eagerly: bool = True


@dataclass
class ToyRunConfig(RunConfig):
    # Test knobs, in `run` so that a resumed run may turn them off (run.* keys may change on resume).
    seconds_to_read: float = 0.0
    seconds_per_epoch: float = 0.0
    seconds_per_batch: float = 0.0  # after each training batch, printing "toy: epoch E batch B"
    seconds_to_export: float = 0.0


@dataclass
class ToyConfig:
    data: ToyDataConfig = field(default_factory=ToyDataConfig)
    model: ToyModelConfig = field(default_factory=ToyModelConfig)
    train: ToyTrainConfig = field(default_factory=ToyTrainConfig)
    run: ToyRunConfig = field(default_factory=ToyRunConfig)
    tuning: TuningConfig = field(
        default_factory=lambda: TuningConfig(
            objective="val_accuracy",
            space={
                "train.learning_rate": {"min": 1e-3, "max": 1e-1, "sampling": "log"},
                "model.units": [4, 8, 16],
            },
        )
    )


def make_points(n: int, noise: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    x = rng.normal(0, noise, (n, 2)) + np.where(y[:, None] == 1, 1.0, -1.0)
    return x.astype("float32"), y.astype("int32")


@dataclass
class Points:
    train: tuple[np.ndarray, np.ndarray]
    validation: tuple[np.ndarray, np.ndarray]
    test: None = None


@dataclass
class Predictor:
    model: object
    seconds_to_export: float


def slow_step(what: str, seconds: float) -> None:
    if seconds:
        print(f"toy: {what}", flush=True)
        # Short sleeps: the kernel may hand a Ctrl-C to one of TensorFlow's threads, which does not
        # wake the main thread's sleep; Python raises KeyboardInterrupt when the main thread next
        # wakes (one long sleep made the SIGINT test wait out the whole 60 s under load).
        end = time.monotonic() + seconds
        while (left := end - time.monotonic()) > 0:
            time.sleep(min(left, 0.1))


class Toy(Recipe):
    name = "toy"
    config_class = ToyConfig

    def read_data(self, cfg: ToyConfig) -> Points:
        slow_step("reading data", cfg.run.seconds_to_read)
        return Points(
            make_points(cfg.data.examples, cfg.data.noise, seed=0),
            make_points(cfg.data.examples // 2, cfg.data.noise, seed=1),
        )

    def read_split(self, cfg: ToyConfig, source: str, split: str):
        raise UserError("the toy recipe has no data files")

    def build(self, cfg: ToyConfig, data: Points) -> Training:
        import keras
        import tensorflow as tf

        from recipes.engine import training

        if cfg.model.units == cfg.model.fail_on_units:
            raise UserError(
                f"model.units: {cfg.model.units} units is the failing value this test asked for"
            )
        (x, y), (x_val, y_val) = data.train, data.validation
        train_ds = (
            tf.data.Dataset.from_tensor_slices((x, y))
            .shuffle(len(x), seed=cfg.train.seed)
            .batch(cfg.train.batch_size)
        )
        val_ds = tf.data.Dataset.from_tensor_slices((x_val, y_val)).batch(256)
        model = keras.Sequential(
            [
                keras.Input((2,)),
                keras.layers.Dense(cfg.model.units, activation="relu"),
                keras.layers.Dropout(cfg.model.dropout),
                keras.layers.Dense(2),
            ]
        )
        steps = -(-len(x) // cfg.train.batch_size)
        epoch_now = [0]
        slow = keras.callbacks.LambdaCallback(
            on_epoch_begin=lambda epoch, logs: epoch_now.__setitem__(0, epoch + 1),
            on_train_batch_end=lambda batch, logs: slow_step(
                f"epoch {epoch_now[0]} batch {batch + 1}", cfg.run.seconds_per_batch
            ),
            on_epoch_end=lambda epoch, logs: slow_step(
                f"epoch {epoch + 1} done", cfg.run.seconds_per_epoch
            ),
        )
        return Training(
            model,
            [
                Phase(
                    "train",
                    cfg.train.epochs,
                    lambda m: training.compile_classifier(m, cfg.train, steps),
                )
            ],
            train_ds,
            val_ds,
            len(x),
            {"labels": ["a", "b"]},
            callbacks=[slow],
        )

    def load(self, run_path: Path, cfg: ToyConfig, task: dict, model) -> Predictor:
        return Predictor(model, cfg.run.seconds_to_export)

    def evaluate(self, predictor: Predictor, points, split: str, cfg: ToyConfig) -> Evaluation:
        x, y = points
        predicted = predictor.model.predict(x, verbose=0).argmax(axis=-1)
        return Evaluation(classification_report(y, predicted, ["a", "b"]))

    def predict(
        self, predictor: Predictor, inputs: Sequence[str], pretokenized: bool = False
    ) -> list[dict]:
        points = np.array([[float(v) for v in text.split(",")] for text in inputs], np.float32)
        probabilities = predictor.model.predict(points, verbose=0)
        return [
            {
                "text": text,
                "label": "ab"[int(p.argmax())],
                "probabilities": {"a": float(p[0]), "b": float(p[1])},
            }
            for text, p in zip(inputs, probabilities)
        ]

    def export(self, predictor: Predictor, directory: Path) -> Path:
        slow_step("exporting", predictor.seconds_to_export)
        return directory / "model.keras"


RECIPE = Toy()

if __name__ == "__main__":
    from recipes.engine.cli import script_main

    raise SystemExit(script_main(RECIPE, sys.argv[1:]))
