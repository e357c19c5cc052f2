"""A run's results as named numbers, read from its files (history.csv, metrics.json) without
TensorFlow: the search, the HParams dashboard and `keras-zoo runs` all name a run's figures this
way (`val_accuracy`, `test_macro_f1`, ...), and `keras-zoo runs` must answer without loading
TensorFlow."""

from __future__ import annotations

import csv
from collections.abc import Mapping
from pathlib import Path

from recipes.engine.run_dir import RunDir
from recipes.engine.run_files import read_if_present


def monitor_mode(monitor: str) -> str:
    """Whether less (`min`: a loss) or more (`max`) of the metric is better."""
    return "min" if "loss" in monitor else "max"


def selection_key(row: Mapping[str, float | str], monitor: str) -> tuple[float, float]:
    """How a run ranks its epochs to keep the best (greater is better): by `monitor`, ties broken
    by the lower validation loss. Accuracy on a small split ties often (4 of 12 hymenoptera epochs
    scored 36/37 on a 37-image selection split), and the loss is the finer measure of the same data."""
    sign = 1.0 if monitor_mode(monitor) == "max" else -1.0
    loss = row.get("val_loss")
    return sign * float(row[monitor]), -float(loss) if loss not in (None, "") else 0.0


def history_rows(history: Path) -> list[dict[str, str]]:
    """The rows of a run's history.csv (none before its first epoch)."""
    if not history.exists():
        return []
    with history.open() as f:
        return list(csv.DictReader(f))


def scalar_metrics(report: dict) -> dict[str, float]:
    """An evaluation report's headline numbers (its float values: accuracy, macro_f1, f1, ...)."""
    return {k: v for k, v in report.items() if isinstance(v, float)}


def report_metrics(report: dict) -> dict[str, float]:
    """metrics.json's scalars as `val_<key>` and `test_<key>` (e.g. `val_macro_f1`)."""
    return {
        prefix + k: v
        for split, prefix in (("validation", "val_"), ("test", "test_"))
        for k, v in scalar_metrics(report.get(split, {})).items()
    }


def final_metrics(run: RunDir, monitor: str, keep_last: bool | None = None) -> dict[str, float]:
    """A finished run's results as named numbers: the logged epoch metrics of its best epoch (by
    `monitor`, e.g. `val_loss`, `val_entity_f1`), or of its last with `keep_last` (a fixed budget;
    None: as metrics.json's `chosen_epoch` says), overlaid by the final evaluation's scalars as
    `val_<key>` and `test_<key>` (e.g. `val_macro_f1`), plus `epochs` run and `best_epoch`.
    Tuning objectives and the HParams dashboard read these."""
    metrics: dict[str, float] = {}
    report = read_if_present(run.metrics)
    if keep_last is None:
        keep_last = report.get("chosen_epoch", {}).get("chosen_on") == "none"
    rows = history_rows(run.history)
    if not keep_last:
        rows = [r for r in rows if r.get(monitor)]
    if rows:
        best = rows[-1] if keep_last else max(rows, key=lambda r: selection_key(r, monitor))
        metrics.update(
            {k: float(v) for k, v in best.items() if v and k not in ("epoch", "learning_rate")}
        )
        metrics["best_epoch"] = float(int(best["epoch"]) + 1)
        metrics["epochs"] = float(len(rows))
    metrics.update(report_metrics(report))
    return metrics
