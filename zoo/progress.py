"""Progress bars for the slow steps outside training (tokenising, decoding images, evaluating,
predicting): tqdm bars on stderr that appear only on a terminal, and only once a step has taken
`DELAY_S` seconds, so short steps and logs (a pipe, CI) stay quiet."""

from __future__ import annotations

import sys
from collections.abc import Iterable
from typing import TypeVar

DELAY_S = 3.0
T = TypeVar("T")


def on_terminal() -> bool:
    return sys.stderr.isatty()


def progress(
    iterable: Iterable[T], total: int | None = None, desc: str = "", unit: str = "batch"
) -> Iterable[T]:
    """`iterable`, with a bar once it has run for `DELAY_S` seconds (on a terminal)."""
    if not on_terminal():
        return iterable
    from tqdm import tqdm

    return tqdm(
        iterable, total=total, desc=desc, unit=unit, delay=DELAY_S, leave=False, dynamic_ncols=True
    )


def predict_callbacks(steps: int, desc: str = "predicting") -> list:
    """Callbacks for `model.predict` that show its batches as such a bar (none off a terminal)."""
    if not on_terminal():
        return []
    import keras
    from tqdm import tqdm

    class Bar(keras.callbacks.Callback):
        def on_predict_begin(self, logs=None):
            self.bar = tqdm(
                total=steps, desc=desc, unit="batch", delay=DELAY_S, leave=False, dynamic_ncols=True
            )

        def on_predict_batch_end(self, batch, logs=None):
            self.bar.update(1)

        def on_predict_end(self, logs=None):
            self.bar.close()

    return [Bar()]
