"""`keras-zoo show RUN`: a run's report (the recipe's own tables of metrics.json, the kept epoch),
or a search's results table, read from the files without TensorFlow (see keras_zoo_cli/runs.py)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from keras_zoo_cli.runs import is_search, resolve, run_row, search_row
from recipes.engine.cli import kept_epoch_line
from recipes.engine.model_card import format_runtime
from recipes.engine.registry import report_format
from recipes.engine.run_dir import UNREADABLE, is_run, run_status
from recipes.engine.run_files import RunFileError, read_if_present
from recipes.engine.run_metrics import scalar_metrics
from tuning.common import SearchDir, SearchResult
from tuning.results import format_table
from zoo.errors import UserError


def show(name: str, runs_dir: str) -> str:
    """What `keras-zoo show` prints for a run or search named under `runs_dir`, or by its path."""
    path = resolve(name, runs_dir)
    try:
        return _show_search(path, runs_dir) if is_search(path) else _show_run(path, name, runs_dir)
    except RunFileError as e:
        raise UserError(f"{path}: unreadable: {e.short}") from None


def _show_run(path: Path, name: str, runs_dir: str) -> str:
    if not path.is_dir() or not is_run(path):
        raise UserError(f"{name}: not a keras-zoo run or search (no run.json, nor search.yaml)")
    if (state := run_status(path))["status"] == UNREADABLE:
        raise UserError(f"{path}: unreadable: {state['reason']}")
    r, report, config = (
        run_row(path, runs_dir),
        read_if_present(path / "metrics.json"),
        path / "config.yaml",
    )
    status = f"failed: {r['reason']}" if r["reason"] else r["status"]  # the whole reason
    lines = [
        f"run:      {r['name']} ({r['recipe']})",
        f"status:   {status}",
        f"backbone: {r['backbone']}",
        f"epochs:   {r['epochs']}",
        f"config:   {config if config.exists() else '-'}",
        f"runtime:  {format_runtime(read_if_present(path / 'run.json').get('runtime'))}",
    ]
    format_report = _report_format(r["recipe"])
    lines += [
        f"\n{split} metrics:\n{format_report(report[split])}"
        for split in ("validation", "test")
        if split in report
    ]
    if "chosen_epoch" in report and "last_epoch" in report:
        lines.append("\n" + kept_epoch_line(report))
    return "\n".join(
        lines if report else [*lines, "\nno metrics.json: the run has no final evaluation"]
    )


def _report_format(recipe: str) -> Callable[[dict], str]:
    """The recipe's own report table (without loading the recipe, so no TensorFlow); plain figures
    for a recipe known only by its module path (run.json keeps the recipe's short name)."""
    return report_format(recipe) or (
        lambda report: ", ".join(f"{k} {v:.4f}" for k, v in scalar_metrics(report).items())
    )


def _show_search(path: Path, runs_dir: str) -> str:
    r, search = search_row(path, runs_dir), SearchDir(path)
    lines = [
        f"search:   {r['name']} ({r['recipe']})",
        f"status:   {r['status']}",
        f"backbone: {r['backbone']}",
        f"config:   {search.config}",
    ]
    lines += [f"best:     {search.best_config}"] if search.best_config.exists() else []
    results = read_if_present(search.results_json)
    if not results:
        return "\n".join(
            lines
            + ["\nno results.json yet: the search is running, or stopped before its end (--resume)"]
        )
    trials = results["trials"]
    best = next((t for t in trials if t.get("rank") == 1), None)
    table = format_table(
        SearchResult(search, trials, best, results["objective"], results["direction"])
    )
    return "\n".join(lines + ["", table])
