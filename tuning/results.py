"""A search's results: the ranked table (printed, CSV, JSON), the best trial's config as YAML, and
the HParams experiment that names the hyperparameters and metrics for TensorBoard.

Keras Tuner writes no HParams experiment config (keras-tuner#427), so TensorBoard's HParams
dashboard would have to guess the columns; `write_experiment` declares them.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

from recipes.engine.config import save_config, with_values
from recipes.engine.run_files import read_if_present
from tuning.common import SearchDir, SearchResult, objective_of
from tuning.space import config_values, trial_config

# Metrics every trial has that say little about quality; listed after the others.
BOOKKEEPING = ("best_epoch", "epochs", "examples_per_second")


def write_experiment(search: SearchDir, oracle, cfg, metric_names: list[str] | None = None) -> None:
    """The HParams experiment at the search's root: each tuned hyperparameter with its domain, and
    the named metrics (the objective first). Rewritten at the end with every metric the trials logged."""
    import tensorflow as tf
    from tensorboard.plugins.hparams import api as hparams_api

    objective, _ = objective_of(cfg)
    names = [objective] + [m for m in (metric_names or []) if m != objective]
    hparams = [hparams_api.HParam(hp.name, _domain(hp)) for hp in oracle.get_space().space]
    metrics = [
        hparams_api.Metric(name, display_name=f"{name} (objective)" if name == objective else name)
        for name in names
    ]
    for old in search.path.glob("events.out.tfevents.*"):
        old.unlink()
    writer = tf.summary.create_file_writer(str(search.path))
    with writer.as_default():
        hparams_api.hparams_config(hparams=hparams, metrics=metrics)
    writer.close()


def _domain(hp):
    from tensorboard.plugins.hparams import api as hparams_api

    kind = type(hp).__name__
    if kind == "Float":
        return hparams_api.RealInterval(float(hp.min_value), float(hp.max_value))
    if kind == "Int":
        return hparams_api.IntInterval(int(hp.min_value), int(hp.max_value))
    if kind == "Boolean":
        return hparams_api.Discrete([False, True])
    if kind == "Fixed":
        return hparams_api.Discrete([hp.value])
    return hparams_api.Discrete(list(hp.values))


def collect(search: SearchDir, oracle, cfg) -> list[dict]:
    """One row per trial, completed trials ranked best first, then failed and unfinished ones."""
    objective, direction = objective_of(cfg)
    rows = []
    for trial_id, trial in sorted(oracle.trials.items()):
        result_file = search.trial(trial_id) / "result.json"
        result = read_if_present(result_file)
        status = str(trial.status)
        metrics = result.get("metrics", {}) if status == "COMPLETED" else {}
        error = result.get("error") or _last_line(trial.message) if status != "COMPLETED" else ""
        rows.append(
            {
                "trial_id": trial_id,
                "status": status,
                "objective": metrics.get(objective),
                "hyperparameters": config_values(trial.hyperparameters.values),
                "metrics": metrics,
                "duration_s": result.get("duration_s"),
                "error": error or "",
            }
        )
    sign = -1 if direction == "max" else 1
    done = sorted(
        (r for r in rows if r["objective"] is not None and not math.isnan(r["objective"])),
        key=lambda r: sign * r["objective"],
    )
    for rank, row in enumerate(done, 1):
        row["rank"] = rank
    return done + [r for r in rows if r not in done]


def _last_line(message: str | None) -> str:
    lines = (message or "").strip().splitlines()
    return lines[-1] if lines else ""


def write_results(search: SearchDir, oracle, cfg) -> SearchResult:
    """results.csv, results.json and best.yaml; the HParams experiment with every metric seen."""
    objective, direction = objective_of(cfg)
    rows = collect(search, oracle, cfg)
    best = rows[0] if rows and rows[0].get("rank") == 1 else None
    metric_names = _metric_names(rows)
    hp_names = list(dict.fromkeys(k for r in rows for k in r["hyperparameters"]))
    search.results_json.write_text(
        json.dumps(
            {
                "objective": objective,
                "direction": direction,
                "algorithm": cfg.tuning.algorithm,
                "best_trial": best["trial_id"] if best else None,
                "trials": rows,
            },
            indent=2,
            default=float,
        )
        + "\n"
    )
    with search.results_csv.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(
            [
                "rank",
                "trial_id",
                "status",
                f"objective:{objective}",
                *hp_names,
                *metric_names,
                "duration_s",
                "error",
            ]
        )
        for r in rows:
            writer.writerow(
                [
                    r.get("rank", ""),
                    r["trial_id"],
                    r["status"],
                    _cell(r["objective"]),
                    *(_cell(r["hyperparameters"].get(k)) for k in hp_names),
                    *(_cell(r["metrics"].get(k)) for k in metric_names),
                    _cell(r["duration_s"]),
                    r["error"],
                ]
            )
    if best is not None:
        write_best_config(search, cfg, oracle.trials[best["trial_id"]])
    write_experiment(search, oracle, cfg, metric_names)
    return SearchResult(search, rows, best, objective, direction)


def write_best_config(search: SearchDir, cfg, trial) -> Path:
    """The best trial's complete recipe config: `keras-zoo train <recipe> --config best.yaml` trains it."""
    best = trial_config(cfg, trial.hyperparameters.values, trial.trial_id)
    best = with_values(
        best, {"run.dir": "", "run.name": "", "run.hparams": True}, source="best.yaml"
    )
    save_config(best, search.best_config)
    return search.best_config


def _metric_names(rows: list[dict]) -> list[str]:
    names = list(dict.fromkeys(k for r in rows for k in r["metrics"]))
    return sorted(names, key=lambda n: (n in BOOKKEEPING, not n.startswith("val_"), n))


def _cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def format_table(result: SearchResult, max_metrics: int = 3) -> str:
    """The ranked trials as a plain-text table: objective, hyperparameters, a few other metrics."""
    rows = result.trials
    hp_names = list(dict.fromkeys(k for r in rows for k in r["hyperparameters"]))
    others = [m for m in _metric_names(rows) if m != result.objective and m not in BOOKKEEPING][
        :max_metrics
    ]
    header = ["rank", "trial", "status", result.objective, *hp_names, *others, "time_s"]
    table = [header] + [
        [
            str(r.get("rank", "-")),
            r["trial_id"],
            r["status"],
            _cell(r["objective"]),
            *(_cell(r["hyperparameters"].get(k)) for k in hp_names),
            *(_cell(r["metrics"].get(k)) for k in others),
            f"{r['duration_s']:.0f}" if r["duration_s"] is not None else "",
        ]
        for r in rows
    ]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in table]
    failed = [
        f"trial {r['trial_id']} {r['status'].lower()}: {r['error']}" for r in rows if r["error"]
    ]
    return "\n".join(lines + failed + ([result.stopped_by] if result.stopped_by else []))
