"""SST-2 with the default sentiment config and MiniLM-L6, plus a bare KerasHub fit for comparison.

    python benchmarks/sentiment_sst2.py [--epochs N] [--bare-steps 200] [--out benchmarks/out/sst2]

Reports dev accuracy / macro-F1, training examples per second over each full epoch, wall time and
peak memory of the recipe; then, in the same process and on the same model and batch size:
- the step throughput of a bare `keras_hub.models.TextClassifier.fit` at fixed length 128, as a ratio;
- the recipe's per-step overhead: median step time of the recipe's compiled model and callbacks
  against a bare TextClassifier fit, on identical (length-bucketed) batches, alternated.
Needs ../shared (SST-2 and the MiniLM weights). Not a test: it takes about an hour on 2 cores.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import time
from pathlib import Path

from common import (
    ROOT,
    SHARED,
    peak_rss_gib,
    scratch_run,
    sentiment_model,
    timed_fit,
)

SST2 = SHARED / "data" / "sst2"
MINILM = SHARED / "pretrained" / "minilm-l6-h384-uncased"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=0, help="0: the default config's")
    parser.add_argument("--bare-steps", type=int, default=200)
    parser.add_argument("--overhead-steps", type=int, default=60)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "out" / "sst2"))
    parser.add_argument(
        "--train-subset", type=int, default=0, help="first N training rows only (smoke runs)"
    )
    args = parser.parse_args()
    if not SST2.exists() or not MINILM.exists():
        raise SystemExit(f"needs {SST2} and {MINILM}")
    with contextlib.ExitStack() as scratch:  # the overhead run's directory, open until the end
        measure(args, scratch)


def measure(args: argparse.Namespace, scratch: contextlib.ExitStack) -> None:
    import keras
    import keras_hub
    import tensorflow as tf

    from recipes import engine, sentiment
    from recipes.common.labels import label_ids
    from recipes.engine import training

    train_file = SST2 / "train.tsv"
    if args.train_subset:  # a scratch copy of the first rows, outside the repository
        Path(args.out).mkdir(parents=True, exist_ok=True)
        train_file = Path(args.out) / "train_subset.tsv"
        train_file.write_text(
            "".join(open(SST2 / "train.tsv").readlines()[: args.train_subset + 1])
        )
    overrides = [
        f"data.train={train_file}",
        f"data.validation={SST2 / 'dev.tsv'}",
        "data.text_column=sentence",
        f"model.backbone={MINILM}",
        f"run.runs_dir={args.out}",
        "run.name=recipe",
    ]
    if args.epochs:
        overrides.append(f"train.epochs={args.epochs}")
    cfg = sentiment.RECIPE.load_config(overrides=overrides)
    start = time.perf_counter()
    run, report = engine.train(sentiment.RECIPE, cfg, overwrite=True, verbose=2)
    wall = time.perf_counter() - start
    policy = keras.mixed_precision.global_policy().name
    dev = report["validation"]
    result = {
        "dev_accuracy": dev["accuracy"],
        "dev_macro_f1": dev["macro_f1"],
        "train_examples_per_second_per_epoch": report["train_examples_per_second"],
        "recipe_wall_seconds": wall,
        "recipe_peak_rss_gib": peak_rss_gib(),
        "precision": policy,
        "epochs": cfg.train.epochs,
        "batch_size": cfg.train.batch_size,
    }
    print(json.dumps(result, indent=2), flush=True)

    # Identical batches for both: the recipe's own bucketed training batches, held in memory.
    data = sentiment.RECIPE.read_data(cfg)
    task = json.loads(run.task.read_text())
    from zoo.text_inputs import TextEncoder, bucket_lengths, load_tokenizer, training_batches

    tokenizer = load_tokenizer(str(run.path / "tokenizer"))
    encoder = TextEncoder(
        tokenizer, ["token_ids", "segment_ids", "padding_mask"], task["max_length"]
    )
    y = label_ids(data.train, data.labels)
    train_ds, steps = training_batches(
        encoder, data.train.texts, y, cfg.train.batch_size, 0, encoder.lengths(data.train.texts)
    )
    batches = list(train_ds.take(args.overhead_steps))
    same = tf.data.Dataset.from_generator(
        lambda: iter(batches),
        output_signature=(
            {k: tf.TensorSpec([None, None], v.dtype) for k, v in batches[0][0].items()},
            tf.TensorSpec([None], tf.int32),
        ),
    )

    def bare_model(optimizer=None):
        model = keras_hub.models.TextClassifier.from_preset(
            str(MINILM), num_classes=2, preprocessor=None
        )
        model.compile(
            optimizer=optimizer or keras.optimizers.Adam(5e-5),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            metrics=["accuracy"],
            jit_compile=cfg.train.jit_compile,
        )
        return model

    def recipe_model(out: Path):
        backbone = keras_hub.models.Backbone.from_preset(str(MINILM))
        model = sentiment_model(cfg.model, backbone, 2)
        training.compile_classifier(model, cfg.train, steps)
        bench_run = scratch_run(scratch, out, "overhead", "run")
        callbacks = [
            training.EpochStats(len(batches) * cfg.train.batch_size),
            keras.callbacks.CSVLogger(str(bench_run.history)),
            keras.callbacks.TensorBoard(str(bench_run.logs)),
            keras.callbacks.TerminateOnNaN(),
        ]
        return model, callbacks

    keras.mixed_precision.set_global_policy(policy)
    # bare: KerasHub's TextClassifier as its docs compile it (Adam); bare_same_optimizer: the same with
    # the recipe's AdamW + warm-up/decay + clipping, so the two ratios separate optimiser cost from
    # the recipe's own machinery (model head, callbacks).
    variants = {
        "bare": (bare_model(), []),
        "bare_same_optimizer": (bare_model(training.make_optimizer(cfg.train, steps)), []),
        "recipe": recipe_model(Path(args.out)),
    }
    warm = same.take(len(bucket_lengths(encoder.max_length)) * 3)  # trace every bucket shape
    times = {name: [] for name in variants}
    for model, _ in variants.values():
        timed_fit(model, warm)
    for _ in range(3):  # alternate, so drifting machine load hits all alike
        for name, (model, callbacks) in variants.items():
            times[name] += timed_fit(model, same, callbacks)
    # Per-batch medians (each batch shape has its own cost), summed over the batch set.
    k = len(batches)
    total = {name: sum(statistics.median(t[i::k]) for i in range(k)) for name, t in times.items()}
    result["per_step_overhead_vs_bare_fit"] = total["recipe"] / total["bare"] - 1
    result["per_step_overhead_vs_bare_fit_same_optimizer"] = (
        total["recipe"] / total["bare_same_optimizer"] - 1
    )
    result["overhead_batches"] = k
    print(
        json.dumps({key: result[key] for key in result if key.startswith("per_step")}), flush=True
    )

    # Bare fit at a fixed length of 128, in the recipe's precision and in KerasHub's defaults.
    texts = tf.constant(data.train.texts[: args.bare_steps * cfg.train.batch_size])
    pre = keras_hub.models.TextClassifierPreprocessor.from_preset(str(MINILM), sequence_length=128)
    fixed = tf.data.Dataset.from_tensor_slices((texts, y[: len(texts)])).batch(cfg.train.batch_size)
    fixed = fixed.map(lambda t, label: (pre(t), label)).cache()
    for name, precision in [
        ("bare_fixed128_examples_per_second", policy),
        ("bare_fixed128_float32_examples_per_second", "float32"),
    ]:
        if name.endswith("float32_examples_per_second") and policy == "float32":
            continue
        keras.mixed_precision.set_global_policy(precision)
        model = bare_model()
        timed_fit(model, fixed.take(3))
        start = time.perf_counter()
        model.fit(fixed, epochs=1, verbose=0)
        result[name] = len(texts) / (time.perf_counter() - start)
        print(json.dumps({name: result[name]}), flush=True)
    recipe_rate = statistics.median(report["train_examples_per_second"])
    result["throughput_ratio_vs_bare_fixed128"] = (
        recipe_rate / result["bare_fixed128_examples_per_second"]
    )
    if "bare_fixed128_float32_examples_per_second" in result:
        result["throughput_ratio_vs_bare_fixed128_float32"] = (
            recipe_rate / result["bare_fixed128_float32_examples_per_second"]
        )
    result["peak_rss_gib"] = peak_rss_gib()
    result["date"] = time.strftime("%Y-%m-%d")
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / "result.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
