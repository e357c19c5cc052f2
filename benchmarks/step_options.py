"""Do keras-zoo's rewrites of Keras internals pay? An in-process A/B of sentiment training steps.

    python benchmarks/step_options.py --rounds 7 --steps 60 [--set train.precision=float32]
    python benchmarks/step_options.py --variants on          # one variant: its examples/s alone

Builds the sentiment recipe's model and training batches as `keras-zoo train sentiment` does
(first 6,400 SST-2 rows, MiniLM-L6, `train.precision: auto`), once per variant, in one process:

- `on`: every rewrite on (`train.speedups: true`, the default: zoo's fused AdamW);
- `off`: every rewrite off (`train.speedups: false`: keras.optimizers.AdamW);
- `fused_kernel_only`: zoo's fused AdamW with Keras's own `_apply_weight_decay` and
  `_backend_update_step`: what its two private overrides beyond `update_step` add.

(The lazy embedding updates and the hand-written layer-norm gradient were two more variants until
they failed the rule below on an AVX512-BF16 EPYC, at both precisions, and were deleted:
benchmarks/RESULTS.md, "Runs anywhere".)

All variants train on the same first `--steps` batches, held in memory. After a pass each to trace
every shape and `--warmup-rounds` uncounted rounds (the first timed passes ran slower, the first
variant's most: the allocator's and oneDNN's caches are still filling), each round times one `fit` pass of every variant, in an order rotated from round to
round; a variant's ratio in a round is its pass time over `on`'s, so > 1 means `on` is faster.
Prints each round and, per variant, the median ratio and whether every ratio is above 1.0
(the rule for keeping a rewrite: median >= 1.03 and every ratio > 1.0). Needs ../shared.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import types

from common import ROOT, SHARED, cpu_description, timed_fit

SST2 = SHARED / "data" / "sst2"
MINILM = SHARED / "pretrained" / "minilm-l6-h384-uncased"
VARIANTS = ("on", "off", "fused_kernel_only")


def build_variant(name: str, base_overrides: list[str], train_file, data=None):
    """(built recipe, data) for one variant; `data` is read once and shared."""
    import keras

    from recipes import sentiment
    from recipes.engine import devices, training

    overrides = {"on": [], "off": ["train.speedups=false"], "fused_kernel_only": []}[name]
    cfg = sentiment.RECIPE.load_config(
        overrides=[
            f"data.train={train_file}",
            f"data.validation={SST2 / 'dev.tsv'}",
            "data.text_column=sentence",
            f"model.backbone={MINILM}",
            *base_overrides,
            *overrides,
        ]
    )
    local = devices.local_devices()
    cfg.train.precision = devices.resolve_precision(cfg.train.precision, local)
    cfg.train.jit_compile = devices.resolve_jit_compile(cfg.train.jit_compile, local)
    devices.set_precision(cfg.train.precision)
    keras.utils.set_random_seed(cfg.train.seed)
    data = data or sentiment.RECIPE.read_data(cfg)
    built = sentiment.RECIPE.build(cfg, data)
    built.phases[0].prepare(built.model)
    if name == "fused_kernel_only":  # before the step is traced
        optimizer = built.model.optimizer
        for method in ("_apply_weight_decay", "_backend_update_step"):
            setattr(
                optimizer,
                method,
                types.MethodType(getattr(keras.optimizers.AdamW, method), optimizer),
            )
    training.build_optimizer(built.model)  # as recipes.engine.training.fit does
    return built, data, cfg


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument(
        "--warmup-rounds",
        type=int,
        default=1,
        help="rounds run first and not counted (the allocator's and oneDNN's caches fill)",
    )
    parser.add_argument("--rows", type=int, default=6400)
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--out", default="")
    args = parser.parse_args()
    variants = args.variants.split(",")
    if variants[0] != "on" or not set(variants) <= set(VARIANTS):
        parser.error(f"--variants: `on` first, then any of {', '.join(VARIANTS[1:])}")
    out = ROOT / "benchmarks" / "out" / "peers"
    out.mkdir(parents=True, exist_ok=True)
    train = out / f"sst2_train_{args.rows}.tsv"
    if not train.exists():
        train.write_text("".join(open(SST2 / "train.tsv").readlines()[: args.rows + 1]))
    models, data, same, precision = {}, None, None, ""
    for name in variants:
        built, data, cfg = build_variant(name, args.overrides, train, data)
        precision = cfg.train.precision
        # held in memory after the first pass: every pass of every variant sees these batches
        if same is None:
            same = built.train.take(args.steps).cache()
        models[name] = built.model
        first = sum(timed_fit(built.model, same))  # traces every shape (and fills the cache)
        print(f"{name}: built, first pass {first:.1f} s", flush=True)
    examples = sum(int(y.shape[0]) for _, y in same)
    seconds = {name: [] for name in variants}  # each pass's wall time
    # each pass's median step time x steps: without the host's stalls
    steady = {name: [] for name in variants}
    for round_ in range(-args.warmup_rounds, args.rounds):
        order = variants[round_ % len(variants) :] + variants[: round_ % len(variants)]
        for name in order:
            start = time.perf_counter()
            steps = timed_fit(models[name], same)
            seconds[name].append(time.perf_counter() - start)
            steady[name].append(statistics.median(steps) * len(steps))
        if round_ < 0:  # a warm-up round: not counted
            for figures in (seconds, steady):
                for name in variants:
                    figures[name].pop()
            print("warm-up round done", flush=True)
            continue
        print(
            f"round {round_ + 1}: "
            + ", ".join(f"{n} {seconds[n][-1]:.1f} s ({steady[n][-1]:.1f})" for n in variants),
            flush=True,
        )
    summary = {
        "cpu": cpu_description(),
        "precision": precision,
        "steps": args.steps,
        "examples": examples,
        "rounds": args.rounds,
        "overrides": args.overrides,
        "examples_per_second": {n: [round(examples / s, 2) for s in seconds[n]] for n in variants},
        "ratios": {},
    }
    for name in variants[1:]:
        for measure, figures in (("pass", seconds), ("steady", steady)):
            ratios = [b / a for a, b in zip(figures["on"], figures[name])]
            median = statistics.median(ratios)
            summary["ratios"][f"{name} ({measure})"] = {
                "each": [round(r, 3) for r in ratios],
                "median": round(median, 3),
                "all_above_1": all(r > 1.0 for r in ratios),
                "keep_rule_met": median >= 1.03 and all(r > 1.0 for r in ratios),
            }
            print(
                f"on against {name} ({measure}): median {median:.3f}x, each {', '.join(f'{r:.3f}' for r in ratios)}",
                flush=True,
            )
    print("RESULT " + json.dumps(summary), flush=True)
    if args.out:
        with open(args.out, "w") as f:
            json.dump(summary, f, indent=2)


if __name__ == "__main__":
    sys.exit(main())
