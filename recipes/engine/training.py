"""How every recipe's model trains: optimiser, phases, callbacks, `fit`, resume.

The engine (recipes/engine/lifecycle.py) hands `fit` a recipe's built model and its tf.data pipelines;
everything about training (AdamW with warm-up and linear decay, clipping, best checkpoint, early
stopping, resume from the last epoch, NaN guard, TensorBoard curves) lives here once.
"""

from __future__ import annotations

import collections.abc
import csv
import json
import math
import shutil
import time
import warnings
from pathlib import Path

import keras
import tensorflow as tf

from recipes.engine.config import RunConfig, TrainConfig
from recipes.engine.contract import Phase
from recipes.engine.run_dir import RunDir
from recipes.engine.run_metrics import history_rows, monitor_mode, selection_key
from zoo import keras_compat
from zoo.errors import UserError
from zoo.heads import split_at_head
from zoo.runtime import available_memory


@keras.saving.register_keras_serializable(package="keras_zoo")
class WarmupLinearDecay(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warm-up from 0 to `peak` over `warmup_steps`, then linear decay to 0 at `total_steps`.

    Keras has cosine decay with warm-up but no linear decay with warm-up, the usual schedule for
    fine-tuning transformers; hence this small class.
    """

    def __init__(self, peak: float, warmup_steps: int, total_steps: int):
        self.peak, self.warmup_steps, self.total_steps = (
            float(peak),
            int(warmup_steps),
            int(total_steps),
        )

    def __call__(self, step):
        step = keras.ops.cast(step, "float32")
        # No warm-up: the peak from the first step (`step / 1` would make the first step's rate 0).
        warmup = step / self.warmup_steps if self.warmup_steps > 0 else 1.0
        decay = (self.total_steps - step) / max(self.total_steps - self.warmup_steps, 1)
        return self.peak * keras.ops.clip(keras.ops.minimum(warmup, decay), 0.0, 1.0)

    def get_config(self) -> dict:
        return {
            "peak": self.peak,
            "warmup_steps": self.warmup_steps,
            "total_steps": self.total_steps,
        }


def make_optimizer(
    cfg: TrainConfig,
    steps_per_epoch: int,
    learning_rate: float | None = None,
    epochs: int | None = None,
) -> keras.optimizers.Optimizer:
    """AdamW with linear warm-up and decay over `epochs` (default: the config's) at peak `learning_rate`:
    zoo's fused one (`train.speedups`, the default) or Keras's own."""
    total = max((cfg.epochs if epochs is None else epochs) * steps_per_epoch, 1)
    peak = cfg.learning_rate if learning_rate is None else learning_rate
    schedule = WarmupLinearDecay(peak, round(cfg.warmup_ratio * total), total)
    settings = {
        "learning_rate": schedule,
        "weight_decay": cfg.weight_decay,
        "clipnorm": cfg.clipnorm or None,
    }
    if cfg.speedups:  # the same arithmetic in fewer passes (zoo/keras_compat.py)
        optimizer = keras_compat.FusedAdamW(**settings)
    else:
        optimizer = keras.optimizers.AdamW(**settings)
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


def head_on_features(
    model: keras.Model, examples: int, cfg: TrainConfig
) -> tuple[keras.Model, keras.Model] | None:
    """`(features, head)` (`zoo.heads.split_at_head`) for a recipe whose backbone is frozen and
    whose inputs are the same every epoch: it computes the backbone's features once, in inference
    mode, and trains `head` on them, handing the whole model on as `Training.whole_model`. None
    (the backbone runs every epoch) with `train.speedups` off, or, said in one line, when the
    features of `examples` examples would take over half the memory available."""

    if not cfg.speedups:
        return None
    features, head = split_at_head(model)
    size = examples * math.prod(head.input.shape[1:]) * 4
    available = available_memory()
    if available is not None and size > available / 2:
        print(
            f"model.finetune=frozen: the backbone's features of {examples} examples would take "
            f"{size / 2**30:.1f} GB, over half the {available / 2**30:.1f} GB of memory available; "
            "the frozen backbone runs on every batch of every epoch instead",
            flush=True,
        )
        return None
    print(
        f"model.finetune=frozen: computing the frozen backbone's features of {examples} examples once; "
        "the head trains on them",
        flush=True,
    )
    return features, head


def fit(
    model: keras.Model,
    train: tf.data.Dataset,
    validation: tf.data.Dataset,
    cfg: TrainConfig,
    run: RunDir,
    examples_per_epoch: int,
    phases: list[Phase] | None = None,
    extra_callbacks: list | None = None,
    class_weight: dict | None = None,
    verbose: int | str = "auto",
    logging: RunConfig | None = None,
    select_epoch: bool = True,
) -> dict:
    """Train with the standard callbacks, phase after phase; on return the model holds the best
    epoch's weights (best over all phases), or with `select_epoch` False the last epoch's.

    Without `phases` the model must be compiled already and trains `cfg.epochs` epochs. Epochs are
    numbered across phases, so history.csv and TensorBoard show one continuous run. Each finished
    phase leaves a marker in checkpoints/, so `--resume` skips it and continues the phase it was in.
    A phase may fit a part of `model` on datasets of its own (`Phase.model`, `Phase.data`).
    `logging` (the config's `run` section) says what goes to TensorBoard during training.
    Returns the per-epoch history of this run (all epochs, including those before a resume).
    """
    phases = phases or [Phase("train", cfg.epochs, lambda m: None)]
    if select_epoch and any(phase.model is not None for phase in phases):
        raise ValueError("a phase that fits a part of the model needs select_epoch=False")
    epoch = 0
    for i, phase in enumerate(phases):
        fitted = model if phase.model is None else phase.model
        phase.prepare(fitted)
        marker = run.path / "checkpoints" / f"phase{i}-{phase.name}.done.json"
        if marker.exists():  # finished before an interruption: keep its result, go on
            epoch = json.loads(marker.read_text())["end_epoch"]
            load_best_weights(model, run)
            continue
        if phase.epochs <= 0:
            continue
        phase_train, phase_validation = phase.data() if phase.data else (train, validation)
        _fit_phase(
            fitted,
            phase_train,
            phase_validation,
            cfg,
            run,
            phase.examples or examples_per_epoch,
            initial_epoch=epoch,
            epochs=epoch + phase.epochs,
            backup=run.backup / phase.name,
            extra_callbacks=extra_callbacks,
            class_weight=class_weight,
            verbose=verbose,
            logging=logging,
            select_epoch=select_epoch,
        )
        epoch = len(history_rows(run.history))
        # The last epoch's weights, for the report's last-epoch figures (the engine deletes them).
        if not any(later.epochs > 0 for later in phases[i + 1 :]):
            model.save_weights(str(run.last_weights))
        if select_epoch:
            load_best_weights(model, run)
        else:  # the phase's end is what the next phase (or a resume after this one) starts from
            model.save_weights(str(run.best_weights))
        run.write_json(marker, {"end_epoch": epoch})
    # each phase's BackupAndRestore removed its own state
    shutil.rmtree(run.backup, ignore_errors=True)
    rows = history_rows(run.history)
    if select_epoch and (not rows or cfg.monitor not in rows[0]):
        known = ", ".join(k for k in (rows[0] if rows else {}) if k != "epoch")
        raise UserError(f"train.monitor: '{cfg.monitor}' is not a logged metric (logged: {known})")
    return {key: [float(r[key]) if r[key] else float("nan") for r in rows] for key in rows[0]}


def build_optimizer(model: keras.Model) -> None:
    """Make the compiled optimizer's variables now, before `fit` traces its train step.

    Without a distribution strategy Keras leaves them to the first traced step, and TensorFlow
    traces a function that created variables a second time: the whole forward and backward graph
    twice, 8-10 s of a MiniLM-L6 fit's start on 2 cores (benchmarks/RESULTS.md, "Tracing")."""
    if model.optimizer is not None and not model.optimizer.built:
        model.optimizer.build(model.trainable_variables)


def load_best_weights(model: keras.Model, run: RunDir, path: Path | None = None) -> None:
    """Load the best epoch's weights (or those at `path`) into `model`, if the file exists."""
    path = path or run.best_weights
    if path.exists():
        # the file's optimizer state belongs to the phase that wrote it
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Skipping variable loading for optimizer")
            model.load_weights(str(path))


def _fit_phase(
    model,
    train,
    validation,
    cfg: TrainConfig,
    run: RunDir,
    examples_per_epoch: int,
    initial_epoch: int,
    epochs: int,
    backup: Path,
    extra_callbacks,
    class_weight,
    verbose,
    logging: RunConfig,
    select_epoch: bool = True,
) -> None:
    callbacks = training_callbacks(
        cfg, run, examples_per_epoch, backup, extra_callbacks, logging, select_epoch
    )
    build_optimizer(model)  # here, not for phases that are skipped or already done
    # the datasets shuffle themselves (and Keras warns on shuffle=True)
    model.fit(
        train,
        validation_data=validation,
        initial_epoch=initial_epoch,
        epochs=epochs,
        callbacks=callbacks,
        class_weight=class_weight,
        verbose=verbose,
        shuffle=False,
    )


def training_callbacks(
    cfg: TrainConfig,
    run: RunDir,
    examples_per_epoch: int,
    backup: Path,
    extra_callbacks: list | None = None,
    logging: RunConfig | None = None,
    select_epoch: bool = True,
) -> list:
    """The callbacks of every training phase: figures per epoch, the recipe's own, the divergence
    guard, resume state, best checkpoint, history.csv, TensorBoard (unless `run.tensorboard` is
    off), early stopping; the last two only when an epoch is selected (`select_epoch`)."""
    mode = monitor_mode(cfg.monitor)
    logging = logging or RunConfig()
    callbacks = [
        EpochStats(examples_per_epoch),  # first, so the loggers below see its figure
        # recipes' epoch metrics (e.g. entity F1): before the checkpoint and loggers
        *(extra_callbacks or []),
        StopWhenDiverged(cfg.learning_rate),  # before anything saves the epoch's weights or figures
        ResumeState(str(backup)),
        *(
            [BestEpochCheckpoint(run.best_weights, cfg.monitor, run.history)]
            if select_epoch
            else []
        ),
        HistoryFile(run.history),
    ]
    if run.tensorboard:
        callbacks.append(TrainingLogs(run.logs, logging.log_every_steps, logging.profile))
    if cfg.early_stopping_patience > 0 and select_epoch:
        callbacks.append(
            keras.callbacks.EarlyStopping(
                monitor=cfg.monitor, mode=mode, patience=cfg.early_stopping_patience
            )
        )
    return callbacks


def seed_everything(seed: int) -> None:
    keras.utils.set_random_seed(seed)


class DivergedError(UserError):
    """Training produced a value that is not finite (recipes/engine/training.py `StopWhenDiverged`)."""


class StopWhenDiverged(keras.callbacks.Callback):
    """Stops training where a non-finite value first shows: a step's loss (checked every step, as
    Keras's TerminateOnNaN does), the epoch's validation loss and metrics, or the weights after the
    epoch's updates (one reduction per epoch): one optimizer step can blow the weights up while its
    own loss was still finite. It runs before the callbacks that save the epoch's weights, resume
    state and figures, so none of the diverged epoch's is kept; the run ends `failed`."""

    def __init__(self, learning_rate: float):
        super().__init__()
        self.learning_rate, self.epoch = learning_rate, 0

    def _stop(self, what: str) -> None:
        raise DivergedError(
            f"training diverged: {what}; lower train.learning_rate (it is {self.learning_rate:g}) "
            "or check the data for broken labels"
        )

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            self._stop(
                f"the training loss is {float(loss)} at epoch {self.epoch + 1}, step {batch + 1}"
            )

    def on_epoch_end(self, epoch, logs=None):
        for key, value in (logs or {}).items():
            if isinstance(value, (int, float)) and not math.isfinite(value):
                self._stop(f"{key} is {value} after epoch {epoch + 1}")
        if not bool(
            tf.reduce_all(
                [tf.reduce_all(tf.math.is_finite(w)) for w in self.model.trainable_weights]
            )
        ):
            self._stop(f"the weights are not finite after epoch {epoch + 1}")


class BestEpochCheckpoint(keras.callbacks.Callback):
    """Saves the weights of the best epoch so far, ranked by `run_metrics.selection_key` (the
    monitored value, ties to the lower validation loss), as `final_metrics` ranks them afterwards.
    Keras's ModelCheckpoint compares the monitored value alone and keeps the first of tied epochs.
    After a resume the epochs already in history.csv are the ones to beat."""

    def __init__(self, path: Path, monitor: str, history: Path):
        super().__init__()
        self.path, self.monitor = path, monitor
        done = [selection_key(r, monitor) for r in history_rows(history) if r.get(monitor)]
        self.best = max(done) if done else None

    def on_epoch_end(self, epoch, logs=None):
        if (logs or {}).get(self.monitor) is None:
            return  # no figure this epoch (training.fit says which metrics exist when it ends)
        key = selection_key(logs, self.monitor)
        if self.best is None or key > self.best:
            self.best = key
            self.model.save_weights(str(self.path), overwrite=True)


class HistoryFile(keras.callbacks.Callback):
    """history.csv: a row per epoch, kept across phases and resumes, as Keras's CSVLogger writes it
    (`epoch`, then the logged figures in sorted order), except that a phase logging other figures
    than the phases before it (a contrastive loss, then a classifier's accuracy) widens the header,
    where CSVLogger would write its rows under the old one. Each epoch rewrites the (small) file
    whole and swaps it in, so a kill mid-write leaves the previous epoch's file, never a torn row."""

    def __init__(self, path: Path):
        super().__init__()
        self.path = Path(path)

    def on_epoch_end(self, epoch, logs=None):
        rows = history_rows(self.path)
        row = {"epoch": epoch, **{key: _csv_value(logs[key]) for key in sorted(logs or {})}}
        columns = list(dict.fromkeys([*(rows[0] if rows else []), *row]))
        partial = self.path.with_name(self.path.name + ".partial")
        with partial.open("w", newline="") as f:
            writer = csv.DictWriter(f, columns, restval="")  # csv.excel, as CSVLogger: CRLF
            writer.writeheader()
            writer.writerows([*rows, row])
        partial.replace(self.path)


def _csv_value(value):
    """A logged figure as CSVLogger writes it (its `handle_value`)."""
    if isinstance(value, str) or (hasattr(value, "ndim") and value.ndim == 0):
        return value
    if isinstance(value, collections.abc.Iterable):
        return f'"[{", ".join(map(str, value))}]"'
    return value


class ResumeState(keras.callbacks.BackupAndRestore):
    """Keras's BackupAndRestore (the state `--resume` continues from, saved every epoch), keeping
    the previous epoch's state too: a kill in the middle of writing one leaves a torn file, and
    the resume then falls back to the epoch before. A torn first state (no epoch before it) is
    deleted, and the phase starts again from its first epoch, as it would have without it."""

    def __init__(self, backup_dir: str):
        super().__init__(
            backup_dir, save_freq="epoch", delete_checkpoint=True, double_checkpoint=True
        )

    def on_train_begin(self, logs=None):
        try:
            super().on_train_begin(logs)
        except OSError as e:
            print(
                f"{self.backup_dir}: the resume state is unreadable ({str(e).splitlines()[0]}), "
                "probably cut short by a kill; this phase starts again from its first epoch",
                flush=True,
            )
            shutil.rmtree(self.backup_dir, ignore_errors=True)
            super().on_train_begin(logs)


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
        logs["learning_rate"] = float(
            keras.ops.convert_to_numpy(self.model.optimizer.learning_rate)
        )


class TrainingLogs(keras.callbacks.TensorBoard):
    """Keras's TensorBoard callback (per-epoch curves in `train/` and `validation/`, the loss every
    `every_steps` steps, a profile of a few steps), with step numbers that go on across training
    phases and resumes: Keras counts steps from 0 at every `fit`.

    The learning rate and examples per second come from `EpochStats` in the epoch logs.
    """

    def __init__(self, logdir: Path, every_steps: int = 0, profile: bool = False):
        super().__init__(
            str(logdir),
            update_freq=every_steps if every_steps > 0 else "epoch",
            write_graph=False,
            profile_batch=(10, 14) if profile else 0,
        )

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
        # the first epoch of this fit: continue the count
        if keras_compat.tensorboard_step(self) == 0 and steps:
            keras_compat.continue_tensorboard_steps(self, epoch * steps, steps)
