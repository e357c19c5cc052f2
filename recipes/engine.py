"""The training lifecycle shared by every recipe: optimiser, callbacks, fit, resume, reports.

A recipe hands `fit` a built model and its tf.data pipelines; everything else about training
(AdamW with warm-up and linear decay, clipping, best checkpoint, early stopping, resume,
NaN guard, TensorBoard) lives here once.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import shutil
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import keras
import numpy as np
import tensorflow as tf

from recipes import summaries
from recipes.config import RunConfig, TrainConfig, save_config
from recipes.run_dir import RunDir, open_run, plan_run, start_run
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


def make_optimizer(cfg: TrainConfig, steps_per_epoch: int, learning_rate: float | None = None,
                   epochs: int | None = None) -> keras.optimizers.Optimizer:
    """AdamW with linear warm-up and decay over `epochs` (default: the config's) at peak `learning_rate`."""
    total = max((cfg.epochs if epochs is None else epochs) * steps_per_epoch, 1)
    peak = cfg.learning_rate if learning_rate is None else learning_rate
    schedule = WarmupLinearDecay(peak, round(cfg.warmup_ratio * total), total)
    optimizer = keras.optimizers.AdamW(learning_rate=schedule, weight_decay=cfg.weight_decay,
                                       clipnorm=cfg.clipnorm or None)
    # No weight decay on biases and normalisation scales, as in BERT's original recipe.
    optimizer.exclude_from_weight_decay(var_names=["bias", "gamma", "beta"])
    return optimizer


def compile_classifier(model: keras.Model, cfg: TrainConfig, steps_per_epoch: int) -> None:
    """Compile for integer class labels (the text recipes)."""
    model.compile(
        optimizer=make_optimizer(cfg, steps_per_epoch),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
        jit_compile=cfg.jit_compile,
        run_eagerly=cfg.run_eagerly,
    )


@dataclass
class Phase:
    """A stretch of training with its own trainable weights and learning-rate schedule.

    Most recipes train in one phase; transfer learning on images trains the head on a frozen
    backbone first, then fine-tunes. `prepare` sets `layer.trainable` flags and compiles the model
    for the phase (it is called again when a resumed run skips a finished phase, so the model's
    trainable state is right for the phases that follow).
    """

    name: str
    epochs: int
    prepare: Callable[[keras.Model], None]


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
        run: RunDir, examples_per_epoch: int, phases: list[Phase] | None = None,
        extra_callbacks: list | None = None, class_weight: dict | None = None,
        verbose: int | str = "auto", logging: RunConfig | None = None) -> dict:
    """Train with the standard callbacks, phase after phase; on return the model holds the best
    epoch's weights (best over all phases).

    Without `phases` the model must be compiled already and trains `cfg.epochs` epochs. Epochs are
    numbered across phases, so history.csv and TensorBoard show one continuous run. Each finished
    phase leaves a marker in checkpoints/, so `--resume` skips it and continues the phase it was in.
    `logging` (the config's `run` section) says what goes to TensorBoard during training.
    Returns the per-epoch history of this run (all epochs, including those before a resume).
    """
    phases = phases or [Phase("train", cfg.epochs, lambda m: None)]
    epoch = 0
    for i, phase in enumerate(phases):
        phase.prepare(model)
        marker = run.path / "checkpoints" / f"phase{i}-{phase.name}.done.json"
        if marker.exists():  # finished before an interruption: keep its result, go on
            epoch = json.loads(marker.read_text())["end_epoch"]
            load_best_weights(model, run)
            continue
        if phase.epochs <= 0:
            continue
        _fit_phase(model, train, validation, cfg, run, examples_per_epoch, initial_epoch=epoch,
                   epochs=epoch + phase.epochs, backup=run.backup / phase.name,
                   extra_callbacks=extra_callbacks, class_weight=class_weight, verbose=verbose,
                   logging=logging)
        epoch = _history_rows(run.history)
        load_best_weights(model, run)
        run.write_json(marker, {"end_epoch": epoch})
    shutil.rmtree(run.backup, ignore_errors=True)  # each phase's BackupAndRestore removed its own state
    rows = _history_rows(run.history, as_rows=True)
    if not rows or cfg.monitor not in rows[0]:
        known = ", ".join(k for k in (rows[0] if rows else {}) if k != "epoch")
        raise UserError(f"train.monitor: '{cfg.monitor}' is not a logged metric (logged: {known})")
    return {key: [float(r[key]) if r[key] else float("nan") for r in rows] for key in rows[0]}


def load_best_weights(model: keras.Model, run: RunDir) -> None:
    if run.best_weights.exists():
        with warnings.catch_warnings():  # the file's optimizer state belongs to the phase that wrote it
            warnings.filterwarnings("ignore", message="Skipping variable loading for optimizer")
            model.load_weights(str(run.best_weights))


def _history_rows(history: Path, as_rows: bool = False):
    if not history.exists():
        return [] if as_rows else 0
    with history.open() as f:
        rows = list(csv.DictReader(f))
    return rows if as_rows else len(rows)


def _fit_phase(model, train, validation, cfg: TrainConfig, run: RunDir, examples_per_epoch: int,
               initial_epoch: int, epochs: int, backup: Path, extra_callbacks, class_weight, verbose,
               logging: RunConfig) -> None:
    callbacks = training_callbacks(cfg, run, examples_per_epoch, backup, extra_callbacks, logging)
    try:
        model.fit(train, validation_data=validation, initial_epoch=initial_epoch, epochs=epochs,
                  callbacks=callbacks, class_weight=class_weight, verbose=verbose)
    except RuntimeError as e:
        if "NaN" in str(e) or "Inf" in str(e):
            raise UserError(f"training diverged: the loss became NaN/Inf ({e}); lower train.learning_rate "
                            "or check the data for broken labels") from None
        raise


def training_callbacks(cfg: TrainConfig, run: RunDir, examples_per_epoch: int, backup: Path,
                       extra_callbacks: list | None = None, logging: RunConfig | None = None) -> list:
    """The callbacks of every training phase: figures per epoch, the recipe's own, resume state,
    best checkpoint, history.csv, TensorBoard (unless `run.tensorboard` is off), NaN guard, early stopping."""
    mode = monitor_mode(cfg.monitor)
    logging = logging or RunConfig()
    callbacks = [
        EpochStats(examples_per_epoch),  # first, so the loggers below see its figure
        *(extra_callbacks or []),  # recipes' epoch metrics (e.g. entity F1): before the checkpoint and loggers
        keras.callbacks.BackupAndRestore(str(backup), save_freq="epoch", delete_checkpoint=True),
        keras.callbacks.ModelCheckpoint(str(run.best_weights), monitor=cfg.monitor, mode=mode,
                                        save_best_only=True, save_weights_only=True,
                                        initial_value_threshold=_best_so_far(run.history, cfg.monitor)),
        keras.callbacks.CSVLogger(str(run.history), append=True),
        keras.callbacks.TerminateOnNaN(raise_error=True),
    ]
    if run.tensorboard:
        callbacks.insert(-1, TrainingLogs(run.logs, logging.log_every_steps, logging.profile))
    if cfg.early_stopping_patience > 0:
        callbacks.append(keras.callbacks.EarlyStopping(monitor=cfg.monitor, mode=mode,
                                                       patience=cfg.early_stopping_patience))
    return callbacks


def write_report(run: RunDir, split: str, report: dict, step: int, images: dict[str, bytes] | None = None,
                 text: dict[str, str] | None = None,
                 scores: tuple[np.ndarray, np.ndarray] | None = None) -> None:
    """Add an evaluation report to metrics.json and to TensorBoard in `logs/eval_<split>/`: its
    numbers as `eval/<key>` scalars, `text` (Markdown), `images` (PNG) and, from `scores` (true
    class ids, class probabilities; classes named by `report["labels"]`), a PR curve per class."""
    metrics = json.loads(run.metrics.read_text()) if run.metrics.exists() else {}
    metrics[split] = report
    run.write_json(run.metrics, metrics)
    if not run.tensorboard:
        return
    writer = tf.summary.create_file_writer(str(eval_logdir(run, split)))
    with writer.as_default():
        for key, value in report.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                tf.summary.scalar(f"eval/{key}", value, step=step)
        for name, body in (text or {}).items():
            tf.summary.text(name, body, step=step)
        for name, png in (images or {}).items():
            tf.summary.image(name, tf.io.decode_png(png, channels=4)[tf.newaxis], step=step)
        if scores is not None:
            summaries.write_pr_curves(f"{split}/pr_curve", *scores, report["labels"], step)
    writer.close()


def eval_logdir(run: RunDir, split: str) -> Path:
    """Where an evaluation's summaries (and its embedding projector) go."""
    return run.logs / f"eval_{split}"


def final_metrics(run: RunDir, monitor: str) -> dict[str, float]:
    """A finished run's results as named numbers: the logged epoch metrics of its best epoch (by
    `monitor`, e.g. `val_loss`, `val_entity_f1`), overlaid by the final evaluation's scalars as
    `val_<key>` and `test_<key>` (e.g. `val_macro_f1`), plus `epochs` run and `best_epoch`.
    Tuning objectives and the HParams dashboard read these."""
    metrics: dict[str, float] = {}
    rows = [r for r in _history_rows(run.history, as_rows=True) if r.get(monitor)]
    if rows:
        pick = min if monitor_mode(monitor) == "min" else max
        best = pick(rows, key=lambda r: float(r[monitor]))
        metrics.update({k: float(v) for k, v in best.items() if v and k not in ("epoch", "learning_rate")})
        metrics["best_epoch"] = float(int(best["epoch"]) + 1)
        metrics["epochs"] = float(len(rows))
    report = json.loads(run.metrics.read_text()) if run.metrics.exists() else {}
    for split, prefix in (("validation", "val_"), ("test", "test_")):
        metrics.update({prefix + k: v for k, v in report.get(split, {}).items() if isinstance(v, float)})
    return metrics


def log_hparams_session(logdir: Path, hparams: dict, metrics: dict[str, float], session_id: str) -> None:
    """One session of TensorBoard's HParams dashboard: the hyperparameters and the final metrics as
    scalars, in `logdir` itself (a search's experiment config names these metrics)."""
    from tensorboard.plugins.hparams import api as hparams_api  # noqa: PLC0415

    writer = tf.summary.create_file_writer(str(logdir))
    with writer.as_default():
        hparams_api.hparams(hparams, trial_id=session_id)
        for name, value in metrics.items():
            tf.summary.scalar(name, value, step=0)
    writer.close()


def finish_run(run: RunDir, cfg) -> dict[str, float]:
    """Log a finished run's hyperparameters and final metrics for the HParams dashboard; returns the metrics."""
    from recipes.config import flat_values  # noqa: PLC0415

    metrics = final_metrics(run, cfg.train.monitor)
    if cfg.run.hparams and run.tensorboard:
        log_hparams_session(run.logs, flat_values(cfg), metrics, session_id=str(run.path.resolve()))
    return metrics


def begin_run(recipe: str, cfg, load_config: Callable, overwrite: bool, resume: bool):
    """`(run, cfg)` for a training run: the run directory checked (not yet created), the run's own
    config when resuming (resuming with other settings would mix two runs), seeds and precision set."""
    run = plan_run(cfg.run.runs_dir, recipe, cfg.run.name, overwrite=overwrite, resume=resume, exact_dir=cfg.run.dir)
    if resume:
        cfg = load_config(run.config)
    for key in ("log_every_steps", "embeddings"):
        if getattr(cfg.run, key) < 0:
            raise UserError(f"run.{key}: must be 0 (off) or more, not {getattr(cfg.run, key)}")
    run = dataclasses.replace(run, tensorboard=cfg.run.tensorboard)
    seed_everything(cfg.train.seed)
    set_precision(cfg.train.precision)
    return run, cfg


def create_run(run: RunDir, cfg, resume: bool) -> None:
    """Create the run directory and save the resolved config; call once the inputs are known good."""
    start_run(run, resume=resume)
    save_config(cfg, run.config)
    if run.tensorboard:
        summaries.write_text_summary(run.logs, "config", summaries.config_text(cfg))


def load_finished_run(path, load_config: Callable):
    """`(run, cfg, task, model)` of a finished run: its directory, config, task.json and trained Keras
    model (not compiled), for evaluate / predict / export."""
    import keras_hub  # noqa: F401, PLC0415  (registers the backbone classes for deserialisation)

    run = open_run(path)
    cfg = load_config(run.config)
    run = dataclasses.replace(run, tensorboard=cfg.run.tensorboard)
    task = run.read_json(run.task)
    if not run.keras_model.exists():
        raise UserError(f"{run.keras_model}: not found; the run did not finish (continue it with --resume)")
    return run, cfg, task, keras.saving.load_model(str(run.keras_model), compile=False)


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


class EpochStats(keras.callbacks.Callback):
    """Adds `examples_per_second` (training batches only, validation excluded) and the epoch's final
    `learning_rate` (Keras logs no rate when it comes from a schedule) to the epoch logs."""

    def __init__(self, examples_per_epoch: int):
        super().__init__()
        self.examples = examples_per_epoch

    def on_epoch_begin(self, epoch, logs=None):
        self.start = self.last = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        self.last = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        if logs is None:
            return
        if self.last > self.start:
            logs["examples_per_second"] = self.examples / (self.last - self.start)
        logs["learning_rate"] = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))


class TrainingLogs(keras.callbacks.TensorBoard):
    """Keras's TensorBoard callback (per-epoch curves in `train/` and `validation/`, the loss every
    `every_steps` steps, a profile of a few steps), with step numbers that go on across training
    phases and resumes: Keras counts steps from 0 at every `fit`.

    The learning rate and examples per second come from `EpochStats` in the epoch logs.
    """

    def __init__(self, logdir: Path, every_steps: int = 0, profile: bool = False):
        super().__init__(str(logdir), update_freq=every_steps if every_steps > 0 else "epoch", write_graph=False,
                         profile_batch=(10, 14) if profile else 0)

    # Keras writes the epoch's (and evaluation's) summaries inside the per-step `record_if`, so with
    # `update_freq=N` an epoch whose last step is not a multiple of N loses its epoch curves.
    def on_epoch_end(self, epoch, logs=None):
        with tf.summary.record_if(True):
            super().on_epoch_end(epoch, logs)

    def on_test_end(self, logs=None):
        with tf.summary.record_if(True):
            super().on_test_end(logs)

    def on_epoch_begin(self, epoch, logs=None):
        super().on_epoch_begin(epoch, logs)
        steps = self.params.get("steps") or 0
        if self._global_train_batch == 0 and steps:  # the first epoch of this fit: continue the count
            self._global_train_batch = epoch * steps
            if self._should_trace:  # profile steps after the first few (tracing, warm-up) of this fit
                start = max(1, min(10, steps // 3))
                self._start_batch = self._global_train_batch + start
                self._stop_batch = self._global_train_batch + min(start + 4, steps)
