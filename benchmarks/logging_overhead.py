"""What TensorBoard logging costs a training step, on the SST-2 benchmark configuration.

    python benchmarks/logging_overhead.py [--steps 60] [--rounds 8] [--out benchmarks/out/logging]

The default sentiment config with MiniLM-L6 (as benchmarks/sentiment_sst2.py trains it), on the
recipe's own length-bucketed SST-2 training batches held in memory. One model, two callback sets
from `recipes.engine.training.training_callbacks`, alternated round by round so that drifting machine load
hits both:
- off: `run.tensorboard=false` (history.csv, checkpoints, resume state: everything but TensorBoard);
- on: the defaults (per-epoch curves, learning rate, examples/s, the loss every 50 steps).
Two figures per step:
- direct: the time spent in the per-step hooks of the logging callbacks (`TrainingLogs`, and
  `EpochStats`, which feeds examples/s and the learning rate to the logs), against the step time.
  Nothing else runs per step for logging (event files are written by TensorFlow's writer thread),
  so this is the overhead, measured precisely;
- end to end: a step's time is the interval between two consecutive step starts (the step and every
  callback's per-step work); per batch, the median over rounds, summed over the batches. On this
  2-core VM it is noisy (a few % between rounds), so it can only show that nothing large is missed.

Work done once per epoch or once per run, spread over a default SST-2 run's steps (2 epochs):
- the epoch-end summaries (`TrainingLogs.on_epoch_end`), timed directly;
- the final evaluation's TensorBoard output (confusion matrix, PR curves, misclassified texts,
  projector) on SST-2 dev, against the same evaluation without it.
Needs ../shared (SST-2 and the MiniLM weights).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import statistics
import time
from pathlib import Path

from common import ROOT, SHARED, scratch_run, sentiment_model

SST2 = SHARED / "data" / "sst2"
MINILM = SHARED / "pretrained" / "minilm-l6-h384-uncased"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=50, help="training steps per timed round")
    parser.add_argument(
        "--rounds", type=int, default=12, help="timed rounds per variant, alternated"
    )
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "out" / "logging"))
    args = parser.parse_args()
    if not SST2.exists() or not MINILM.exists():
        raise SystemExit(f"needs {SST2} and {MINILM}")
    with contextlib.ExitStack() as scratch:  # the two runs' directories, open until the end
        measure(args, scratch)


def measure(args: argparse.Namespace, scratch: contextlib.ExitStack) -> None:
    import keras
    import keras_hub
    import numpy as np
    import tensorflow as tf

    from recipes import engine, sentiment
    from recipes.common.labels import label_ids
    from recipes.engine import devices, training
    from zoo.text_inputs import TextEncoder, training_batches

    out = Path(args.out)
    cfg = sentiment.RECIPE.load_config(
        overrides=[
            f"data.train={SST2 / 'train.tsv'}",
            f"data.validation={SST2 / 'dev.tsv'}",
            "data.text_column=sentence",
            f"model.backbone={MINILM}",
        ]
    )
    policy = devices.set_precision(
        devices.resolve_precision(cfg.train.precision, devices.local_devices())
    )
    data = sentiment.RECIPE.read_data(cfg)
    backbone = keras_hub.models.Backbone.from_preset(str(MINILM))
    preprocessor = keras_hub.models.TextClassifierPreprocessor.from_preset(str(MINILM))
    probe = TextEncoder(preprocessor.tokenizer, list(backbone.input), max_length=10**6)
    lengths = probe.lengths(data.train.texts)
    encoder = TextEncoder(
        preprocessor.tokenizer,
        list(backbone.input),
        sentiment.pick_max_length(lengths, cfg.data, backbone.max_sequence_length),
    )
    y = label_ids(data.train, data.labels)
    train_ds, steps = training_batches(
        encoder, data.train.texts, y, cfg.train.batch_size, cfg.train.seed, lengths
    )
    batches = list(train_ds.take(args.steps))
    same = tf.data.Dataset.from_generator(
        lambda: iter(batches),
        output_signature=(
            {k: tf.TensorSpec([None, None], v.dtype) for k, v in batches[0][0].items()},
            tf.TensorSpec([None], tf.int32),
        ),
    )
    same = same.apply(tf.data.experimental.assert_cardinality(len(batches)))
    model = sentiment_model(cfg.model, backbone, len(data.labels))
    training.compile_classifier(model, cfg.train, steps)

    def callbacks(tensorboard: bool):
        run = scratch_run(
            scratch, out, "logging", "on" if tensorboard else "off", tensorboard=tensorboard
        )
        return run, training.training_callbacks(
            cfg.train,
            run,
            len(batches) * cfg.train.batch_size,
            run.backup / "train",
            logging=cfg.run,
        )

    class StepClock(keras.callbacks.Callback):
        """The start time of every step; first in the list, so an interval holds all callbacks' step work."""

        def on_train_begin(self, logs=None):
            self.starts = []

        def on_train_batch_begin(self, batch, logs=None):
            self.starts.append(time.perf_counter())

    clock = StepClock()
    variants = {"off": callbacks(False), "on": callbacks(True)}
    hook_seconds = [0.0]

    def timed(hook):
        def wrapper(*a, **k):
            start = time.perf_counter()
            hook(*a, **k)
            hook_seconds[0] += time.perf_counter() - start

        return wrapper

    for callback in variants["on"][1]:
        if isinstance(callback, (training.TrainingLogs, training.EpochStats)):
            for hook in ("on_train_batch_begin", "on_train_batch_end"):
                setattr(callback, hook, timed(getattr(callback, hook)))
    model.fit(same, epochs=1, verbose=0)  # trace every bucket shape once, untimed
    intervals = {name: [] for name in variants}
    for _ in range(args.rounds):
        for name, (_, cbs) in variants.items():
            model.fit(same, epochs=1, verbose=0, callbacks=[clock, *cbs])
            intervals[name].append(np.diff(clock.starts))
        print(
            json.dumps({name: round(float(i[-1].mean()), 4) for name, i in intervals.items()}),
            flush=True,
        )
    # [steps - 1]
    per_batch = {name: np.median(np.stack(i), axis=0) for name, i in intervals.items()}
    paired = [float(on.sum() / off.sum() - 1) for on, off in zip(intervals["on"], intervals["off"])]
    step_off = float(per_batch["off"].sum()) / len(per_batch["off"])
    result = {
        "date": time.strftime("%Y-%m-%d"),
        "precision": policy,
        "batch_size": cfg.train.batch_size,
        "steps_per_round": len(batches),
        "rounds": args.rounds,
        "log_every_steps": cfg.run.log_every_steps,
        "seconds_per_step_off": step_off,
        "seconds_per_step_on": float(per_batch["on"].sum()) / len(per_batch["on"]),
        "logging_hook_seconds_per_step": hook_seconds[0] / (args.rounds * len(batches)),
        "per_step_overhead_end_to_end": float(per_batch["on"].sum() / per_batch["off"].sum() - 1),
        # Each round's on/off ratio is measured back to back: a second view of the same figure.
        "median_paired_round_overhead": statistics.median(paired),
        "paired_round_overheads": paired,
        "sst2_steps_per_epoch": steps,
    }
    result["per_step_overhead_direct"] = (
        result["logging_hook_seconds_per_step"] / result["seconds_per_step_on"]
    )
    print(
        json.dumps(
            {
                k: result[k]
                for k in (
                    "per_step_overhead_direct",
                    "per_step_overhead_end_to_end",
                    "median_paired_round_overhead",
                )
            }
        ),
        flush=True,
    )

    # Epoch-end summaries, once per epoch: the on-variant's TensorBoard callback with an epoch's logs.
    logger = next(c for c in variants["on"][1] if isinstance(c, training.TrainingLogs))
    epoch_logs = {
        "loss": 0.3,
        "accuracy": 0.9,
        "val_loss": 0.3,
        "val_accuracy": 0.9,
        "examples_per_second": 100.0,
        "learning_rate": 1e-4,
    }
    logger.set_model(model)
    start = time.perf_counter()
    for epoch in range(20):
        logger.on_epoch_end(epoch, dict(epoch_logs))
    result["epoch_end_logging_seconds"] = (time.perf_counter() - start) / 20
    run_steps = cfg.train.epochs * steps
    result["epoch_end_logging_per_step_share"] = result["epoch_end_logging_seconds"] / (
        steps * step_off
    )

    # The final evaluation's TensorBoard output, once per run: SST-2 dev with and without it.
    from zoo.heads import as_float32

    inference = as_float32(
        sentiment_model(
            cfg.model, keras_hub.models.Backbone.from_preset(str(MINILM)), len(data.labels)
        )
    )
    predictor = sentiment.TextClassifier(inference, encoder, data.labels)

    def evaluate(
        run, split: str, eval_cfg
    ) -> None:  # what the engine does per split after training
        engine.write_report(
            run, split, sentiment.RECIPE.evaluate(predictor, data.validation, split, eval_cfg), 0
        )

    evaluation = {"off": [], "on": []}
    evaluate(
        variants["off"][0],
        "warm_up",
        dataclasses.replace(cfg, run=dataclasses.replace(cfg.run, embeddings=0)),
    )
    for _ in range(3):
        for name, (run, _) in variants.items():
            start = time.perf_counter()
            evaluate(run, "validation", cfg)
            evaluation[name].append(time.perf_counter() - start)
    result["evaluation_seconds_off"] = statistics.median(evaluation["off"])
    result["evaluation_seconds_on"] = statistics.median(evaluation["on"])
    extra = result["evaluation_seconds_on"] - result["evaluation_seconds_off"]
    result["evaluation_logging_seconds"] = extra
    # Spread over a default run (2 epochs of SST-2's bucketed batches), as a share of its training steps.
    result["evaluation_logging_per_step_share"] = extra / (run_steps * step_off)
    once = result["epoch_end_logging_per_step_share"] + result["evaluation_logging_per_step_share"]
    result["total_overhead_direct"] = result["per_step_overhead_direct"] + once
    result["total_overhead_end_to_end"] = result["per_step_overhead_end_to_end"] + once
    out.mkdir(parents=True, exist_ok=True)
    (out / "result.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
    keras.backend.clear_session()


if __name__ == "__main__":
    main()
