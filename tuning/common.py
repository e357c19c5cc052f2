"""What every part of a search shares: the search directory's layout, a search's result, the
objective. It imports nothing else from `tuning`, so
that every other module can import it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from recipes.engine.run_metrics import monitor_mode

TUNER_DIR = "keras_tuner"


@dataclass(frozen=True)
class SearchDir:
    path: Path

    config = property(lambda self: self.path / "search.yaml")
    trials = property(lambda self: self.path / "trials")
    workers = property(lambda self: self.path / "workers")
    results_csv = property(lambda self: self.path / "results.csv")
    results_json = property(lambda self: self.path / "results.json")
    best_config = property(lambda self: self.path / "best.yaml")

    def trial(self, trial_id: str) -> Path:
        return self.trials / f"trial_{trial_id}"


@dataclass
class SearchResult:
    search: SearchDir
    trials: list[dict]  # ranked: completed trials best first, then the others
    best: dict | None  # the best completed trial, or None if none completed
    objective: str
    direction: str
    stopped_by: str = ""  # why the search ended before tuning.max_trials, e.g. its time limit


def objective_of(cfg) -> tuple[str, str]:
    """`(metric, direction)` the search optimises: `tuning.objective` (default: the recipe's monitor)."""
    name = cfg.tuning.objective or cfg.train.monitor
    direction = cfg.tuning.direction if cfg.tuning.direction != "auto" else monitor_mode(name)
    return name, direction
