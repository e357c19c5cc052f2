"""What the benchmark scripts share: paths, peak memory, per-step timing of `fit`, scratch run
directories for the callbacks of timed fits, and the sentiment recipe's model on a given backbone."""

from __future__ import annotations

import argparse
import contextlib
import os
import resource
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
from zoo.runtime import configure_tensorflow_cpu  # noqa: E402

configure_tensorflow_cpu()  # before TensorFlow: keras-zoo's CPU settings, as its commands apply them


def benchmark_parser(name: str) -> argparse.ArgumentParser:
    """The options every recipe benchmark takes: `--out` (default benchmarks/out/NAME), `--set`, `--reuse-run`."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "out" / name))
    parser.add_argument(
        "--set", dest="overrides", action="append", default=[], help="config overrides"
    )
    parser.add_argument(
        "--reuse-run",
        action="store_true",
        help="skip training: measure the rest on the run a previous invocation left in --out",
    )
    return parser


def cpu_description() -> str:
    """The CPU behind a figure: its model and the flags that decide keras-zoo's defaults
    (AVX2, AVX-512, native bf16, AMX), as RESULTS.md names it."""
    from recipes.engine.devices import DECIDING_CPU_FLAGS
    from zoo.runtime import cpu_flags, cpu_model

    flags = sorted(cpu_flags() & DECIDING_CPU_FLAGS)
    return f"{cpu_model() or 'unknown CPU'}, {os.cpu_count()} cores ({', '.join(flags) or 'none of avx2/avx512f/bf16/amx'})"


def peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def timed_fit(model, dataset, callbacks=()) -> list[float]:
    """One epoch of `model.fit` over `dataset`; the wall time of each training step, in order."""
    import keras

    class StepTimer(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.times: list[float] = []

        def on_train_batch_begin(self, batch, logs=None):
            self.t = time.perf_counter()

        def on_train_batch_end(self, batch, logs=None):
            self.times.append(time.perf_counter() - self.t)

    timer = StepTimer()
    model.fit(dataset, epochs=1, verbose=0, callbacks=[timer, *callbacks])
    return timer.times


def scratch_run(
    stack: contextlib.ExitStack, runs_dir, recipe: str, name: str, tensorboard: bool = True
):
    """A fresh run directory, `runs_dir/recipe/name`, for the callbacks of timed fits (history.csv,
    TensorBoard logs): it replaces the one an earlier invocation left, and stays open for writing
    (locked, status `running`) until `stack` closes. Returns its `recipes.engine.run_dir.RunDir`."""
    from recipes.engine.run_dir import open_run_for_writing, plan_run

    plan = plan_run(str(runs_dir), recipe, name, overwrite=True)
    return stack.enter_context(open_run_for_writing(plan, recipe, tensorboard=tensorboard)).run


def sentiment_model(model_cfg, backbone, num_classes: int):
    """The sentiment recipe's classifier on `backbone`, as `recipes.sentiment.recipe.Sentiment.build` makes it
    from the config's `model` section (fine-tuning mode, frozen embeddings, head), not yet compiled."""
    from zoo.heads import freeze_token_embeddings, set_finetune_mode, text_classifier

    set_finetune_mode(backbone, model_cfg.finetune, model_cfg.lora_rank)
    if model_cfg.freeze_embeddings:
        freeze_token_embeddings(backbone)
    return text_classifier(backbone, num_classes, model_cfg.dropout, model_cfg.pooling)
