"""Ants vs bees (hymenoptera) with the default image classification config and EfficientNet-Lite0.

    python benchmarks/image_hymenoptera.py [--out benchmarks/out/hymenoptera] [--steps 8] [--rounds 3]

Reports validation accuracy / macro-F1, training images per second per epoch, inference images per
second, wall time and peak memory of the recipe run; then, in the same process, on identical
in-memory batches of the recipe's own augmented training data:
- per-step time of the recipe's fine-tuning model + callbacks against a bare
  `keras_hub.models.ImageClassifier.fit` (as KerasHub compiles it, and with the recipe's optimiser
  and trainable set), alternated, per-batch medians;
- the share of step time spent waiting for data: fitting on the live augmentation pipeline
  against fitting on the same number of pre-built batches.
Then the exported SavedModel (fed the original file bytes, fresh process) and the TFLite models
against the Keras model on the validation images. Needs ../shared. Not a test.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from common import SHARED, benchmark_parser, peak_rss_gib, scratch_run, timed_fit

DATA = SHARED / "data" / "hymenoptera"
WEIGHTS = SHARED / "pretrained" / "efficientnet-lite0-imagenet"


def main() -> None:
    parser = benchmark_parser("hymenoptera")
    parser.add_argument("--steps", type=int, default=7, help="batches per timing round")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    if not DATA.exists() or not WEIGHTS.exists():
        raise SystemExit(f"needs {DATA} and {WEIGHTS}")
    with contextlib.ExitStack() as scratch:  # the overhead run's directory, open until the end
        measure(args, scratch)


def measure(args: argparse.Namespace, scratch: contextlib.ExitStack) -> None:
    import keras
    import keras_hub
    import numpy as np
    import tensorflow as tf

    from recipes import engine
    from recipes import image_classification as ic
    from recipes.common.labels import label_ids
    from recipes.engine import training
    from zoo.export import TFLITE_VARIANTS, tflite_probabilities
    from zoo.image_inputs import augmented_batches, center_crop, predict_probabilities

    cfg = ic.RECIPE.load_config(
        overrides=[
            f"data.train={DATA}",
            f"model.backbone={WEIGHTS}",
            f"run.runs_dir={args.out}",
            "run.name=recipe",
            *args.overrides,
        ]
    )
    start = time.perf_counter()
    if args.reuse_run:  # the training figures are in that invocation's output
        from recipes.engine.run_dir import open_finished_run

        run = open_finished_run(Path(args.out) / ic.RECIPE.name / "recipe")
        report = json.loads(run.metrics.read_text())
        report["train_examples_per_second"] = None
    else:
        run, report = engine.train(ic.RECIPE, cfg, overwrite=True, verbose=2)
    wall = time.perf_counter() - start
    val = report["validation"]
    result = {
        "val_accuracy": val["accuracy"],
        "val_macro_f1": val["macro_f1"],
        "val_correct": round(val["accuracy"] * val["num_examples"]),
        "val_examples": val["num_examples"],
        "misclassified": val["misclassified"],
        "train_images_per_second_per_epoch": report["train_examples_per_second"],
        "recipe_wall_seconds": None if args.reuse_run else wall,
        "recipe_peak_rss_gib": None if args.reuse_run else peak_rss_gib(),
        "precision": keras.mixed_precision.global_policy().name,
    }
    print(json.dumps(result, indent=2), flush=True)

    # Inference throughput of the exported Keras model (float32) on the decoded validation images.
    _, _, predictor = engine.open_finished(ic.RECIPE, run.path)
    model, task = predictor.model, run.read_json(run.task)
    from recipes.image_classification.images import decode_images, read_images

    val_images = decode_images(
        read_images(str(DATA), "validation"), task["side"], task["interpolation"]
    )
    predict_probabilities(model, val_images)  # warm-up: trace
    t = time.perf_counter()
    keras_p = predict_probabilities(model, val_images)
    result["inference_images_per_second"] = len(keras_p) / (time.perf_counter() - t)

    # Exported models against the Keras model.
    crops = center_crop(val_images.pixels, task["image_size"]).numpy()
    for variant, name in TFLITE_VARIANTS.items():
        p = tflite_probabilities(run.export / name, crops)
        result[f"tflite_{variant}_top1_agreement"] = float(
            (p.argmax(-1) == keras_p.argmax(-1)).mean()
        )
        result[f"tflite_{variant}_max_abs_diff"] = float(np.abs(p - keras_p).max())
    script = textwrap.dedent(f"""
        import json, sys
        import tensorflow as tf
        files = json.loads(sys.stdin.read())
        serve = tf.saved_model.load({str(run.export / "saved_model")!r}).signatures["serving_default"]
        out = [serve(image_bytes=tf.constant([open(f, "rb").read() for f in files[i:i + 16]]))["probabilities"]
               for i in range(0, len(files), 16)]
        assert not any(m in sys.modules for m in ("keras_hub", "recipes", "zoo")), "imported more than TF"
        print(json.dumps(tf.concat(out, 0).numpy().tolist()))
    """)
    served = subprocess.run(
        [sys.executable, "-c", script],
        input=json.dumps(val_images.origins),
        capture_output=True,
        text=True,
    )
    if served.returncode:
        raise SystemExit(f"SavedModel check failed:\n{served.stderr[-3000:]}")
    served_p = np.array(json.loads(served.stdout.strip().splitlines()[-1]))
    result["saved_model_max_abs_diff"] = float(np.abs(served_p - keras_p).max())
    result["saved_model_top1_agreement"] = float((served_p.argmax(-1) == keras_p.argmax(-1)).mean())
    print(
        json.dumps(
            {k: v for k, v in result.items() if k.startswith(("tflite", "saved", "inference"))}
        ),
        flush=True,
    )

    # ---- per-step overhead and data wait, on the recipe's fine-tuning phase
    keras.mixed_precision.set_global_policy(result["precision"])
    converter = keras_hub.models.ImageClassifierPreprocessor.from_preset(
        str(WEIGHTS)
    ).image_converter
    splits = ic.RECIPE.read_data(cfg)
    train_images = decode_images(splits.train, task["side"], task["interpolation"])
    y = label_ids(train_images, splits.labels)
    live = augmented_batches(
        train_images, y, 2, cfg.train.batch_size, cfg.train.seed, cfg.augment, task["image_size"]
    )
    batches = [b for b in live.take(args.steps) if int(b[0].shape[0]) == cfg.train.batch_size]
    scale, offset = (
        np.asarray(converter.scale, np.float32),
        np.asarray(converter.offset, np.float32),
    )

    def dataset(normalised: bool, sparse: bool):
        def gen():
            for x, t in batches:
                yield (x * scale + offset if normalised else x), (tf.argmax(t, -1) if sparse else t)

        x_spec = tf.TensorSpec([None, *batches[0][0].shape[1:]], tf.float32)
        t_spec = tf.TensorSpec([None], tf.int64) if sparse else tf.TensorSpec([None, 2], tf.float32)
        return tf.data.Dataset.from_generator(gen, output_signature=(x_spec, t_spec)).cache()

    steps = len(batches)

    def recipe_model():
        from zoo.heads import image_classifier

        bb = keras_hub.models.Backbone.from_preset(str(WEIGHTS))
        # as the recipe's build makes it
        model = image_classifier(bb, 2, converter, cfg.model.dropout)
        phases = ic.training_phases(cfg, bb, steps, 2)
        phases[-1].prepare(model)  # the fine-tuning phase: the expensive one
        bench_run = scratch_run(scratch, args.out, "overhead", "run")
        callbacks = [
            training.EpochStats(steps * cfg.train.batch_size),
            keras.callbacks.CSVLogger(str(bench_run.history)),
            keras.callbacks.TensorBoard(str(bench_run.logs)),
            keras.callbacks.TerminateOnNaN(),
        ]
        return model, callbacks, dataset(False, False)

    def bare_model(same_optimizer: bool):
        bb = keras_hub.models.Backbone.from_preset(str(WEIGHTS))
        model = keras_hub.models.ImageClassifier(
            backbone=bb, num_classes=2, preprocessor=None, dropout=cfg.model.dropout
        )
        if same_optimizer:  # the recipe's trainable set (BatchNorm frozen) and optimiser
            from zoo.heads import unfreeze_top

            unfreeze_top(bb, cfg.model.unfreeze_blocks, cfg.model.train_batchnorm)
            model.compile(
                optimizer=training.make_optimizer(cfg.train, steps),
                loss=keras.losses.CategoricalCrossentropy(
                    from_logits=True, label_smoothing=cfg.train.label_smoothing
                ),
                metrics=["accuracy"],
            )
            return model, [], dataset(True, False)
        model.compile()  # KerasHub's defaults
        return model, [], dataset(True, True)

    variants = {
        "bare": bare_model(False),
        "bare_same_optimizer_and_trainable": bare_model(True),
        "recipe": recipe_model(),
    }
    times = {name: [] for name in variants}
    for model, _, ds in variants.values():
        timed_fit(model, ds)  # trace
    for _ in range(args.rounds):
        for name, (model, callbacks, ds) in variants.items():
            times[name] += timed_fit(model, ds, callbacks)
    total = {
        name: sum(statistics.median(t[i::steps]) for i in range(steps)) for name, t in times.items()
    }
    result["per_step_overhead_vs_bare_fit"] = total["recipe"] / total["bare"] - 1
    result["per_step_overhead_vs_bare_fit_same_optimizer_and_trainable"] = (
        total["recipe"] / total["bare_same_optimizer_and_trainable"] - 1
    )
    result["step_seconds"] = {name: value / steps for name, value in total.items()}

    # Data wait: the same model on the live pipeline against pre-built batches, alternated.
    model, callbacks, prebuilt = variants["recipe"]
    live_steps = live.take(steps)
    wait = {"live": [], "prebuilt": []}
    for _ in range(args.rounds):
        wait["live"].append(statistics.median(timed_fit(model, live_steps)[:steps]))
        wait["prebuilt"].append(statistics.median(timed_fit(model, prebuilt)))
    live_s, prebuilt_s = statistics.median(wait["live"]), statistics.median(wait["prebuilt"])
    result["data_wait_share_of_step"] = max(0.0, 1 - prebuilt_s / live_s)
    result["step_seconds_live_vs_prebuilt"] = [live_s, prebuilt_s]
    result["peak_rss_gib"] = peak_rss_gib()
    result["date"] = time.strftime("%Y-%m-%d")
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / "result.json").write_text(json.dumps(result, indent=2))
    print(json.dumps({k: v for k, v in result.items() if k != "misclassified"}, indent=2))


if __name__ == "__main__":
    main()
