"""One directory per run: `runs/<recipe>/<name>/` holds everything a run produced.

    config.yaml        the resolved config          task.json       label set and input length, in model order
    checkpoints/       best.weights.h5              backup/         BackupAndRestore state (resume)
    logs/              TensorBoard event files      history.csv     per-epoch metrics
    metrics.json       the final evaluation report  export/         model.keras, saved_model/
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from zoo.errors import UserError


@dataclass(frozen=True)
class RunDir:
    path: Path
    tensorboard: bool = True  # write TensorBoard event files (the config's run.tensorboard)

    config = property(lambda self: self.path / "config.yaml")
    task = property(lambda self: self.path / "task.json")
    best_weights = property(lambda self: self.path / "checkpoints" / "best.weights.h5")
    backup = property(lambda self: self.path / "backup")
    logs = property(lambda self: self.path / "logs")
    history = property(lambda self: self.path / "history.csv")
    metrics = property(lambda self: self.path / "metrics.json")
    export = property(lambda self: self.path / "export")
    keras_model = property(lambda self: self.path / "export" / "model.keras")

    def write_json(self, path: Path, data) -> None:
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=2, default=float) + "\n")
        tmp.replace(path)

    def read_json(self, path: Path):
        if not path.exists():
            raise UserError(f"{path}: not found; is {self.path} a finished run?")
        return json.loads(path.read_text())


def open_run(path: str | Path) -> RunDir:
    """An existing run, for evaluate / predict / export."""
    run = RunDir(Path(path))
    if not run.config.exists():
        raise UserError(f"{path}: not a run directory (no config.yaml)")
    return run


def plan_run(runs_dir: str, recipe: str, name: str, *, overwrite: bool = False, resume: bool = False,
             exact_dir: str = "") -> RunDir:
    """The directory a run will use (`exact_dir`, else runs_dir/recipe/name), checked but not yet
    touched: a new run never clobbers an existing one without `overwrite`, and `resume` needs a run
    to continue."""
    run = RunDir(Path(exact_dir) if exact_dir else Path(runs_dir) / recipe / (name or time.strftime("%Y%m%d-%H%M%S")))
    if resume and not run.config.exists():
        raise UserError(f"{run.path}: nothing to resume (no config.yaml); start it without --resume")
    if not resume and not overwrite and run.path.exists() and any(run.path.iterdir()):
        raise UserError(f"{run.path}: run directory exists; pass --overwrite to replace it or --resume to continue it")
    return run


def start_run(run: RunDir, *, resume: bool = False) -> RunDir:
    """Create (or, unless resuming, empty) the run directory. Call once the inputs are known good,
    so that a bad data file leaves no half-made run behind."""
    if not resume and run.path.exists():
        shutil.rmtree(run.path)
    (run.path / "checkpoints").mkdir(parents=True, exist_ok=True)
    run.export.mkdir(exist_ok=True)
    return run
