"""A recipe small enough for the search tests: two classes of generated 2-D points, a one-layer MLP.

It trains through the engine exactly as the real recipes do (run directory, history, best
checkpoint, resume, evaluation report, HParams session), in a second or two per trial, so the
tests can run many trials, kill searches and start workers. `keras-zoo tune tests.toy_recipe`
finds it by import path. Two knobs exist only for the tests: `train.seconds_per_epoch` slows an
epoch down (so a test can kill a trial part-way), and `model.fail_on_units` makes a trial fail.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from recipes import config as config_lib
from recipes.config import RunConfig, TrainConfig, TuningConfig
from zoo.errors import UserError

NAME = "toy"


@dataclass
class ToyDataConfig:
    examples: int = 256
    noise: float = 0.8


@dataclass
class ToyModelConfig:
    units: int = 8
    dropout: float = 0.0
    fail_on_units: int = -1  # a trial with this many units fails with a user error


@dataclass
class ToyTrainConfig(TrainConfig):
    epochs: int = 3
    learning_rate: float = 1e-2
    warmup_ratio: float = 0.0
    early_stopping_patience: int = 0
    precision: str = "float32"
    run_eagerly: bool = True
    seconds_per_epoch: float = 0.0


@dataclass
class ToyConfig:
    data: ToyDataConfig = field(default_factory=ToyDataConfig)
    model: ToyModelConfig = field(default_factory=ToyModelConfig)
    train: ToyTrainConfig = field(default_factory=ToyTrainConfig)
    run: RunConfig = field(default_factory=RunConfig)
    tuning: TuningConfig = field(default_factory=lambda: TuningConfig(objective="val_accuracy", space={
        "train.learning_rate": {"min": 1e-3, "max": 1e-1, "sampling": "log"},
        "model.units": [4, 8, 16],
    }))


def load_config(path: str | Path | None = None, overrides: Sequence[str] = ()) -> ToyConfig:
    return config_lib.load_config(ToyConfig, path, overrides)


def make_points(n: int, noise: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    x = rng.normal(0, noise, (n, 2)) + np.where(y[:, None] == 1, 1.0, -1.0)
    return x.astype("float32"), y.astype("int32")


def train(cfg: ToyConfig, overwrite: bool = False, resume: bool = False, verbose: int | str = "auto",
          export: bool = True):
    import keras
    import tensorflow as tf

    from recipes import engine
    from recipes.metrics import classification_report

    run, cfg = engine.begin_run(NAME, cfg, load_config, overwrite, resume)
    if cfg.model.units == cfg.model.fail_on_units:
        raise UserError(f"model.units: {cfg.model.units} units is the failing value this test asked for")
    engine.create_run(run, cfg, resume)
    x, y = make_points(cfg.data.examples, cfg.data.noise, seed=0)
    x_val, y_val = make_points(cfg.data.examples // 2, cfg.data.noise, seed=1)
    train_ds = tf.data.Dataset.from_tensor_slices((x, y)).shuffle(len(x), seed=cfg.train.seed).batch(cfg.train.batch_size)
    val_ds = tf.data.Dataset.from_tensor_slices((x_val, y_val)).batch(256)
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(cfg.model.units, activation="relu"),
                              keras.layers.Dropout(cfg.model.dropout), keras.layers.Dense(2)])
    engine.compile_classifier(model, cfg.train, steps_per_epoch=-(-len(x) // cfg.train.batch_size))
    slow = keras.callbacks.LambdaCallback(on_epoch_end=lambda epoch, logs: time.sleep(cfg.train.seconds_per_epoch))
    history = engine.fit(model, train_ds, val_ds, cfg.train, run, len(x), extra_callbacks=[slow], verbose=verbose,
                         logging=cfg.run)
    predicted = model.predict(x_val, verbose=0).argmax(axis=-1)
    report = {"validation": classification_report(y_val, predicted, ["a", "b"])}
    engine.write_report(run, "validation", report["validation"], step=len(history["epoch"]))
    engine.finish_run(run, cfg)
    if export:
        model.save(str(run.keras_model))
    return run, report
