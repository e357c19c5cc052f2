"""The training lifecycle shared by every recipe: optimiser, callbacks, fit, resume, reports.

A recipe hands `fit` a built model and its tf.data pipelines; everything else about training
(AdamW with warm-up and linear decay, clipping, best checkpoint, early stopping, resume,
NaN guard, TensorBoard) lives here once.
"""

from __future__ import annotations

import csv
import json
import math
import time
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from recipes.config import TrainConfig
from recipes.run_dir import RunDir
from zoo.errors import UserError


@keras.saving.register_keras_serializable(package="keras_zoo")
class WarmupLinearDecay(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warm-up from 0 to `peak` over `warmup_steps`, then linear decay to 0 at `total_steps`.

    Keras has cosine decay with warm-up but no linear decay with warm-up, the usual schedule for
    fine-tuning transformers; hence this small class.
    """

    def __init__(self, peak: float, warmup_steps: int, total_steps: int):
        self.peak, self.warmup_steps, self.total_steps = float(peak), int(warmup_steps), int(total_steps)

    def __call__(self, step):
        step = keras.ops.cast(step, "float32")
        warmup = step / max(self.warmup_steps, 1)
        decay = (self.total_steps - step) / max(self.total_steps - self.warmup_steps, 1)
        return self.peak * keras.ops.clip(keras.ops.minimum(warmup, decay), 0.0, 1.0)

    def get_config(self) -> dict:
        return {"peak": self.peak, "warmup_steps": self.warmup_steps, "total_steps": self.total_steps}


def monitor_mode(monitor: str) -> str:
    return "min" if "loss" in monitor else "max"


def make_optimizer(cfg: TrainConfig, steps_per_epoch: int) -> keras.optimizers.Optimizer:
    total = max(cfg.epochs * steps_per_epoch, 1)
    schedule = WarmupLinearDecay(cfg.learning_rate, round(cfg.warmup_ratio * total), total)
    optimizer = keras.optimizers.AdamW(learning_rate=schedule, weight_decay=cfg.weight_decay,
                                       clipnorm=cfg.clipnorm or None)
    # No weight decay on biases and normalisation scales, as in BERT's original recipe.
    optimizer.exclude_from_weight_decay(var_names=["bias", "gamma", "beta"])
    return optimizer


def compile_classifier(model: keras.Model, cfg: TrainConfig, steps_per_epoch: int) -> None:
    model.compile(
        optimizer=make_optimizer(cfg, steps_per_epoch),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
        jit_compile=cfg.jit_compile,
    )


def _best_so_far(history: Path, monitor: str) -> float | None:
    """The best monitored value of the epochs already done (after --resume), so the best
    checkpoint is not replaced by a worse epoch."""
    if not history.exists():
        return None
    with history.open() as f:
        values = [float(row[monitor]) for row in csv.DictReader(f) if row.get(monitor)]
    if not values:
        return None
    return min(values) if monitor_mode(monitor) == "min" else max(values)


def fit(model: keras.Model, train: tf.data.Dataset, validation: tf.data.Dataset, cfg: TrainConfig,
        run: RunDir, examples_per_epoch: int, extra_callbacks: list | None = None,
        verbose: int | str = "auto") -> dict:
    """Train with the standard callbacks; on return the model holds the best epoch's weights.

    Returns the per-epoch history of this run (all epochs, including those before a resume).
    """
    mode = monitor_mode(cfg.monitor)
    callbacks = [
        Throughput(examples_per_epoch),  # first, so the loggers below see its figure
        keras.callbacks.BackupAndRestore(str(run.backup), save_freq="epoch", delete_checkpoint=True),
        keras.callbacks.ModelCheckpoint(str(run.best_weights), monitor=cfg.monitor, mode=mode,
                                        save_best_only=True, save_weights_only=True,
                                        initial_value_threshold=_best_so_far(run.history, cfg.monitor)),
        keras.callbacks.CSVLogger(str(run.history), append=True),
        keras.callbacks.TensorBoard(str(run.logs), update_freq="epoch"),
        keras.callbacks.TerminateOnNaN(raise_error=True),
    ]
    if cfg.early_stopping_patience > 0:
        callbacks.append(keras.callbacks.EarlyStopping(monitor=cfg.monitor, mode=mode,
                                                       patience=cfg.early_stopping_patience))
    callbacks += extra_callbacks or []
    try:
        model.fit(train, validation_data=validation, epochs=cfg.epochs, callbacks=callbacks, verbose=verbose)
    except RuntimeError as e:
        if "NaN" in str(e) or "Inf" in str(e):
            raise UserError(f"training diverged: the loss became NaN/Inf ({e}); lower train.learning_rate "
                            "or check the data for broken labels") from None
        raise
    if run.best_weights.exists():
        model.load_weights(str(run.best_weights))
    with run.history.open() as f:
        rows = list(csv.DictReader(f))
    if not rows or cfg.monitor not in rows[0]:
        known = ", ".join(k for k in (rows[0] if rows else {}) if k != "epoch")
        raise UserError(f"train.monitor: '{cfg.monitor}' is not a logged metric (logged: {known})")
    return {key: [float(r[key]) for r in rows] for key in rows[0]}


def write_report(run: RunDir, split: str, report: dict, step: int, images: dict[str, bytes] | None = None,
                 text: dict[str, str] | None = None) -> None:
    """Add an evaluation report to metrics.json and to TensorBoard (scalars, text, PNG images)."""
    metrics = json.loads(run.metrics.read_text()) if run.metrics.exists() else {}
    metrics[split] = report
    run.write_json(run.metrics, metrics)
    writer = tf.summary.create_file_writer(str(run.logs / f"eval_{split}"))
    with writer.as_default():
        for key, value in report.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                tf.summary.scalar(f"eval/{key}", value, step=step)
        for name, body in (text or {}).items():
            tf.summary.text(name, body, step=step)
        for name, png in (images or {}).items():
            tf.summary.image(name, tf.io.decode_png(png, channels=4)[tf.newaxis], step=step)
    writer.close()


def seed_everything(seed: int) -> None:
    keras.utils.set_random_seed(seed)


def resolve_precision(precision: str) -> str:
    """`auto` is mixed bfloat16 on CPUs with native bf16 (AVX512-BF16 or AMX: about 1.5x faster
    fine-tuning, measured) and float32 elsewhere."""
    if precision != "auto":
        return precision
    if tf.config.list_physical_devices("GPU"):
        return "float32"
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return "float32"
    return "mixed_bfloat16" if ("avx512_bf16" in flags or "amx_bf16" in flags) else "float32"


def set_precision(precision: str) -> str:
    """Set Keras's global dtype policy for the models built next; returns the policy used."""
    policy = resolve_precision(precision)
    keras.mixed_precision.set_global_policy(policy)
    return policy


def steps_for_buckets(lengths: np.ndarray, boundaries: list[int], batch_size: int) -> int:
    """How many batches length-bucketed batching makes from examples of these lengths."""
    bucket = np.searchsorted(np.asarray(boundaries), lengths)
    return int(sum(math.ceil(c / batch_size) for c in np.bincount(bucket) if c))


class Throughput(keras.callbacks.Callback):
    """Adds `examples_per_second` (training batches only, validation excluded) to the epoch logs."""

    def __init__(self, examples_per_epoch: int):
        super().__init__()
        self.examples = examples_per_epoch

    def on_epoch_begin(self, epoch, logs=None):
        self.start = self.last = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        self.last = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None and self.last > self.start:
            logs["examples_per_second"] = self.examples / (self.last - self.start)
