"""What the benchmark scripts share: paths, peak memory, and per-step timing of `fit`."""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def benchmark_parser(name: str) -> argparse.ArgumentParser:
    """The options every recipe benchmark takes: `--out` (default benchmarks/out/NAME), `--set`, `--reuse-run`."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "out" / name))
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="config overrides")
    parser.add_argument("--reuse-run", action="store_true",
                        help="skip training: measure the rest on the run a previous invocation left in --out")
    return parser


def peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def timed_fit(model, dataset, callbacks=()) -> list[float]:
    """One epoch of `model.fit` over `dataset`; the wall time of each training step, in order."""
    import keras  # noqa: PLC0415

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
