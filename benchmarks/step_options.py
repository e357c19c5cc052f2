"""Where a sentiment training step's time goes: one option per process, on identical batches.

    python benchmarks/step_options.py --steps 80 [--set train.jit_compile=true] [--threads 2,1]
    ONEDNN=0 python benchmarks/step_options.py ...   # TF_ENABLE_ONEDNN_OPTS=0
    python benchmarks/step_options.py --keras-adamw       # Keras's AdamW instead of the fused one
    python benchmarks/step_options.py --lazy-optimizer    # the optimizer built in the traced step
    python benchmarks/step_options.py --keras-layer-norm  # Keras's layer norm gradient, not zoo's
    python benchmarks/step_options.py --keras-decay       # Keras's `var -= var * wd * lr`, not `var *= 1 - lr * wd`

Builds the sentiment recipe's model and training batches exactly as `keras-zoo train sentiment`
does (first 6,400 SST-2 rows, MiniLM-L6), holds the first `--steps` batches in memory, runs them
once to trace every shape, then times `fit` over them twice and prints the training examples/s of
the faster pass and the share of padding tokens. Needs ../shared. Used for the option table in
RESULTS.md ("Faster than the PyTorch peer").
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

from common import ROOT, SHARED, timed_fit  # noqa: E402  (benchmarks/common.py)

SST2 = SHARED / "data" / "sst2"
MINILM = SHARED / "pretrained" / "minilm-l6-h384-uncased"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=80)
    parser.add_argument("--rows", type=int, default=6400)
    parser.add_argument("--threads", default="", help="intra,inter op threads (TensorFlow's), e.g. 2,1")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--label", default="")
    parser.add_argument("--keras-adamw", action="store_true", help="keras.optimizers.AdamW, not zoo's FusedAdamW")
    parser.add_argument("--lazy-optimizer", action="store_true",
                        help="leave the optimizer to be built in the first traced step (Keras's default)")
    parser.add_argument("--keras-layer-norm", action="store_true",
                        help="keep Keras's layer norm gradient (zoo.backbones gives the backbone zoo's)")
    parser.add_argument("--keras-decay", action="store_true", help="FusedAdamW's weight decay as Keras writes it")
    parser.add_argument("--grappler", default="", help="comma-separated tf.config.optimizer experimental options set false, "
                        "e.g. disable_meta_optimizer (set true) or constant_folding,remapper")
    args = parser.parse_args()
    if os.environ.get("ONEDNN") == "0":
        os.environ["TF_ENABLE_ONEDNN_OPTS"] = "0"
    import keras
    import numpy as np
    import tensorflow as tf

    if args.threads:
        intra, inter = (int(v) for v in args.threads.split(","))
        tf.config.threading.set_intra_op_parallelism_threads(intra)
        tf.config.threading.set_inter_op_parallelism_threads(inter)
    for option in filter(None, args.grappler.split(",")):
        tf.config.optimizer.set_experimental_options({option: option.startswith("disable")})
    from recipes import devices, sentiment, training
    from zoo import keras_compat

    if args.keras_adamw:  # recipes.training.make_optimizer looks the class up when it is called
        keras_compat.FusedAdamW = keras.optimizers.AdamW
    if args.keras_layer_norm:  # zoo.backbones.load_backbone looks the function up when it is called
        keras_compat.use_fast_layer_norms = lambda model: 0
    if args.keras_decay:
        def keras_decay(self, variable, learning_rate=None):
            learning_rate = self.learning_rate if learning_rate is None else learning_rate
            variable.assign_sub(variable * tf.cast(self.weight_decay, variable.dtype) * tf.cast(learning_rate, variable.dtype))
        keras_compat.FusedAdamW._decay = keras_decay

    out = ROOT / "benchmarks" / "out" / "peers"
    out.mkdir(parents=True, exist_ok=True)
    train = out / f"sst2_train_{args.rows}.tsv"
    if not train.exists():
        train.write_text("".join(open(SST2 / "train.tsv").readlines()[: args.rows + 1]))
    cfg = sentiment.RECIPE.load_config(overrides=[
        f"data.train={train}", f"data.validation={SST2 / 'dev.tsv'}", "data.text_column=sentence",
        f"model.backbone={MINILM}", *args.overrides])
    local = devices.local_devices()
    cfg.train.precision = devices.resolve_precision(cfg.train.precision, local)
    cfg.train.jit_compile = devices.resolve_jit_compile(cfg.train.jit_compile, local)
    devices.set_precision(cfg.train.precision)
    keras.utils.set_random_seed(cfg.train.seed)
    data = sentiment.RECIPE.read_data(cfg)
    built = sentiment.RECIPE.build(cfg, data)
    built.phases[0].prepare(built.model)
    if not args.lazy_optimizer:
        training.build_optimizer(built.model)  # as recipes.training.fit does
    # Held in memory after the first pass, so every pass sees the same batches. (Not
    # Dataset.from_generator: it lowers glibc's trim threshold for the whole process, which
    # slows every step.)
    same = built.train.take(args.steps).cache()
    first = timed_fit(built.model, same)  # fills the cache, traces every shape
    tokens = real = examples = 0
    for x, y in same:
        tokens += int(np.prod(x["token_ids"].shape))
        real += int(x["padding_mask"].numpy().sum())
        examples += int(y.shape[0])
    rates, step_sums = [], []
    for _ in range(2):
        start = time.perf_counter()
        step_sums.append(sum(timed_fit(built.model, same)))
        rates.append(examples / (time.perf_counter() - start))
    result = {"label": args.label or " ".join(args.overrides) or "default", "threads": args.threads, "grappler": args.grappler,
              "onednn": os.environ.get("TF_ENABLE_ONEDNN_OPTS", "default"),
              "optimizer": type(built.model.optimizer).__name__,
              "layer_norm": "keras" if args.keras_layer_norm else "zoo", "decay": "keras" if args.keras_decay else "zoo", "lazy_optimizer": args.lazy_optimizer, "steps": args.steps,
              "examples_per_second": round(max(rates), 2), "padding_share": round(1 - real / tokens, 3),
              "precision": cfg.train.precision, "jit_compile": cfg.train.jit_compile,
              "first_pass_step_seconds": [round(t, 2) for t in first[:5]],
              "first_pass_seconds": round(sum(first), 1), "timed_passes_seconds": [round(examples / r, 1) for r in rates],
              "timed_passes_step_seconds": [round(t, 1) for t in step_sums]}
    print("RESULT " + json.dumps(result), flush=True)


if __name__ == "__main__":
    sys.exit(main())
