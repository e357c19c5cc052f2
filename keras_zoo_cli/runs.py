"""`keras-zoo runs`: a table of the runs and searches under a runs directory, and `--delete` to
remove some (`keras-zoo show`, one run's report, is keras_zoo_cli/show.py). Everything comes from
the files (recipes/engine/run_dir.py, tuning/search.py), never from TensorFlow, so it answers at once.

What is a row: the walk from the runs directory, or from each PATTERN's matches, stops at a run or
a search. A search is one row (its best trial's figures); its trials' runs are rows only when a
pattern names them (`keras-zoo runs 'runs/toy/search/trials/*/run0'`). Hidden directories are
never rows: a replacement being trained (`.NAME.partial`) shows on NAME's row, as
`finished (replacement running)`.
"""

from __future__ import annotations

import contextlib
import fcntl
import glob
import json
import os
import shutil
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

from recipes.engine.run_dir import (
    UNREADABLE,
    RunDir,
    is_locked,
    is_run,
    lock_path,
    old_path,
    partial_path,
    run_status,
)
from recipes.engine.run_files import RunFileError, read_if_present
from recipes.engine.run_metrics import final_metrics, history_rows, monitor_mode
from tuning.common import SearchDir
from zoo.backbones import REMOTE_PREFIXES
from zoo.errors import UserError

COLUMNS = ("recipe", "name", "status", "backbone", "epochs", "metrics", "duration", "date")


# ------------------------------------------------------------------------------------------ finding
def is_search(path: Path) -> bool:
    return SearchDir(path).config.is_file() and not is_run(path)


def find(patterns: Sequence[str], runs_dir: str) -> list[Path]:
    """Every run and search that the patterns (globs, or names under `runs_dir`) reach; all of
    `runs_dir` when there are none."""
    roots = [Path(runs_dir)] if not patterns else []
    for pattern in patterns:
        matches = sorted(glob.glob(pattern)) or sorted(glob.glob(os.path.join(runs_dir, pattern)))
        if not matches:
            raise UserError(f"{pattern}: matches no run or search (nor under {runs_dir}/)")
        roots += [Path(match) for match in matches]
    return list(dict.fromkeys(found for root in roots for found in _walk(root)))


def _walk(root: Path) -> Iterator[Path]:
    if not root.is_dir():
        return
    if is_run(root) or is_search(root):
        yield root
        return
    for child in sorted(root.iterdir()):
        if child.is_dir() and not child.is_symlink() and not child.name.startswith("."):
            yield from _walk(child)


def resolve(name: str, runs_dir: str) -> Path:
    """A name under the runs directory (`sentiment/demo`), or a path."""
    for path in (Path(runs_dir) / name, Path(name)):
        if name.strip() and path.exists():
            return path
    raise UserError(f"{name}: no such run or search (neither under {runs_dir}/ nor as a path)")


# -------------------------------------------------------------------------------------------- rows
def run_row(path: Path, runs_dir: str) -> dict:
    """A run's line: status from run.json, figures from metrics.json and history.csv."""
    status, cfg = run_status(path), read_if_present(path / "config.yaml")
    monitor = cfg.get("train", {}).get("monitor", "")
    metrics = final_metrics(RunDir(path), monitor) if monitor else {}
    chosen = read_if_present(path / "metrics.json").get("chosen_epoch")
    epochs = (
        f"{chosen['epoch']}/{chosen['of']}"
        if chosen
        else str(len(history_rows(path / "history.csv")) or "-")
    )
    end = (
        time.time()
        if status.get("status") == "running"
        else status.get("finished_at") or status.get("updated_at")
    )
    return _row(
        "run",
        path,
        runs_dir,
        recipe=status.get("recipe") or path.parent.name,
        status=_run_state(path, status),
        reason=status.get("reason", ""),
        backbone=_backbone(cfg),
        epochs=epochs,
        metrics=metrics,
        key_metrics=_key_metrics(metrics, monitor),
        created_at=status.get("created_at"),
        end=end,
    )


def _run_state(path: Path, status: dict) -> str:
    state = status.get("status", "?")
    if state == UNREADABLE:
        return f"unreadable: {status['reason']}"
    if state == "failed":
        reason = status.get("reason", "?")
        state = f"failed: {reason if len(reason) <= 40 else reason[:37] + '...'}"
    partial = partial_path(path)
    if is_run(partial):  # a replacement under way or interrupted (see the module docstring)
        state += f" (replacement {run_status(partial)['status']})"
    return state


def search_row(path: Path, runs_dir: str) -> dict:
    """A search's line: trials completed of tuning.max_trials, the best completed trial's figures."""
    cfg = read_if_present(path / "search.yaml")
    tuning = cfg.get("tuning", {})
    trials = [read_if_present(file) for file in sorted(path.glob("trials/trial_*/result.json"))]
    done = [t for t in trials if t.get("status") == "COMPLETED"]
    failed, running = sum(t.get("status") == "FAILED" for t in trials), search_is_running(path)
    status = (
        f"search {len(done)}/{tuning.get('max_trials', '?')} trials"
        + (f", {failed} failed" if failed else "")
        + (", running" if running else "")
    )
    objective = tuning.get("objective") or cfg.get("train", {}).get("monitor", "")
    best = _best(done, objective, tuning.get("direction", "auto"))
    start, end = _search_span(path, trials)
    return _row(
        "search",
        path,
        runs_dir,
        recipe=_search_recipe(path),
        status=status,
        reason="",
        backbone=_backbone(cfg),
        epochs="-",
        metrics=best.get("metrics", {}),
        key_metrics=_key_metrics(best.get("metrics", {}), objective),
        best_trial=best.get("trial_id"),
        created_at=start,
        end=time.time() if running else end,
    )


def _search_span(path: Path, trials: list[dict]) -> tuple[float, float | None]:
    """When the first trial started and the last one ended; search.yaml's time when no trial has
    started (a copy of a search changes that time, not the trials' records)."""
    starts = [t["started_at"] for t in trials if "started_at" in t]
    ends = [
        t["started_at"] + t["duration_s"] for t in trials if "started_at" in t and "duration_s" in t
    ]
    return min(starts, default=(path / "search.yaml").stat().st_mtime), max(ends, default=None)


def _search_recipe(path: Path) -> str:
    """The recipe its trials' runs record (a search made with --dir may sit in any folder)."""
    run = next((run for run in sorted(path.glob("trials/trial_*/run0")) if is_run(run)), None)
    return (run_status(run).get("recipe") if run else None) or path.parent.name


def _best(trials: list[dict], objective: str, direction: str) -> dict:
    """The trial with the best objective ({} when none has it), as tuning/results.py ranks them."""
    scored = [t for t in trials if objective in t.get("metrics", {})]
    pick = min if (direction if direction != "auto" else monitor_mode(objective)) == "min" else max
    return pick(scored, key=lambda t: t["metrics"][objective]) if scored else {}


def search_is_running(path: Path) -> bool:
    """The search's chief (or single process) holds its lock, a trial's run is being trained, or a
    worker's heartbeat is fresh (a worker whose chief is on another host)."""
    try:
        timeout = (
            read_if_present(path / "search.yaml").get("tuning", {}).get("worker_timeout_s", 120)
        )
    except RunFileError:
        timeout = 120
    runs = [run for run in path.glob("trials/trial_*/run*") if is_run(run)]
    return (
        is_locked(lock_path(path))
        or any(run_status(run)["status"] == "running" for run in runs)
        or any(_age(beat) < timeout for beat in SearchDir(path).workers.glob("*.alive"))
    )


def _age(file: Path) -> float:
    try:
        return time.time() - file.stat().st_mtime
    except OSError:  # the worker ended just now
        return float("inf")


def _row(
    kind: str, path: Path, runs_dir: str, created_at: float | None, end: float | None, **fields
) -> dict:
    duration = end - created_at if created_at and end else None
    date = time.strftime("%Y-%m-%d %H:%M", time.localtime(created_at)) if created_at else ""
    return {
        "kind": kind,
        "name": _name(path, runs_dir),
        "path": str(path),
        **fields,
        "created_at": created_at,
        "date": date,
        "duration_s": duration,
    }


def _key_metrics(metrics: dict, monitor: str) -> list[str]:
    """The monitored figure, and the test figure that matches it: `test_<key>`, or for an epoch
    metric the report names without its prefix (NER's `val_entity_f1` is the test report's `f1`);
    else the first test figure."""
    test = [k for k in metrics if k.startswith("test_")]
    key = monitor.removeprefix("val_")
    matches = [f"test_{key}", f"test_{key.removeprefix('entity_')}"]
    counterpart = next((k for k in matches if k in test), next(iter(test), ""))
    return [k for k in (monitor, counterpart) if k in metrics]


def _backbone(cfg: dict) -> str:
    """The config's model.backbone; of a local directory, its last path component."""
    backbone = str(cfg.get("model", {}).get("backbone") or "-")
    local = not backbone.startswith(REMOTE_PREFIXES) and (
        "/" in backbone or backbone.startswith((".", "~"))
    )
    return Path(backbone).name if local else backbone


def _name(path: Path, runs_dir: str) -> str:
    try:
        return str(path.resolve().relative_to(Path(runs_dir).resolve()))
    except ValueError:  # named by a pattern outside the runs directory
        return str(path)


def unreadable_row(path: Path, runs_dir: str, error: RunFileError) -> dict:
    """The row of a run or search one of whose files is malformed: its name and what is wrong."""
    kind = "search" if (path / "search.yaml").is_file() and not is_run(path) else "run"
    return _row(
        kind,
        path,
        runs_dir,
        recipe=path.parent.name,
        status=f"unreadable: {error.short}",
        reason=error.short,
        backbone="-",
        epochs="-",
        metrics={},
        key_metrics=[],
        created_at=None,
        end=None,
    )


def row(path: Path, runs_dir: str) -> dict:
    """A run's or search's row, or its `unreadable` row."""
    try:
        return search_row(path, runs_dir) if is_search(path) else run_row(path, runs_dir)
    except RunFileError as e:  # a malformed file (run_files.py): the row says which and why
        return unreadable_row(path, runs_dir, e)


# ------------------------------------------------------------------------------------------- table
def sort_rows(rows: list[dict], metric: str | None) -> list[dict]:
    """Oldest first; with `metric`, best first (highest, or lowest for a loss), rows without it last."""
    rows = sorted(rows, key=lambda r: (r["created_at"] or 0, r["name"]))
    if not metric:
        return rows
    known = sorted({k for r in rows for k in r["metrics"]})
    if metric not in known:
        raise UserError(
            f"--sort: no run has the metric '{metric}'; the metrics: {', '.join(known) or 'none'}"
        )
    sign = 1 if monitor_mode(metric) == "min" else -1
    for r in rows:
        r["key_metrics"] += (
            [metric] if metric in r["metrics"] and metric not in r["key_metrics"] else []
        )
    return sorted(
        (r for r in rows if metric in r["metrics"]), key=lambda r: sign * r["metrics"][metric]
    ) + [r for r in rows if metric not in r["metrics"]]


def format_rows(rows: list[dict]) -> str:
    """The rows as a plain-text table; a row's metrics are its monitored and main test figures."""
    cells = [list(COLUMNS)] + [
        [
            r["recipe"],
            r["name"],
            r["status"],
            r["backbone"],
            r["epochs"],
            "  ".join(f"{k} {r['metrics'][k]:.4f}" for k in r["key_metrics"]) or "-",
            _duration(r["duration_s"]),
            r["date"] or "-",
        ]
        for r in rows
    ]
    widths = [max(len(line[i]) for line in cells) for i in range(len(COLUMNS))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(line, widths)).rstrip() for line in cells)


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    minutes, s = divmod(round(seconds), 60)
    return (
        f"{minutes // 60}h{minutes % 60:02d}m"
        if minutes >= 60
        else f"{minutes}m{s:02d}s"
        if minutes
        else f"{s}s"
    )


# ------------------------------------------------------------------------------------------ delete
def delete(names: Sequence[str], runs_dir: str) -> list[str]:
    """Delete finished, failed and interrupted runs and searches: all of them, or none when one is
    refused (running, or not a keras-zoo run or search). Runs are deleted under their lock, so no
    command can start writing one meanwhile. Returns a line per deleted directory."""
    targets = list(dict.fromkeys(resolve(name, runs_dir) for name in names))
    with contextlib.ExitStack() as locks:
        refused = [
            f"{_name(path, runs_dir)}: {why}" for path in targets if (why := _refusal(path, locks))
        ]
        if refused:
            raise UserError("nothing deleted; " + "; ".join(refused))
        return [_delete(path, runs_dir) for path in targets]


def _refusal(path: Path, locks: contextlib.ExitStack) -> str:
    """Why `path` may not be deleted ("" when it may); a run's lock is taken and kept in `locks`."""
    if is_search(path):
        if search_is_running(path):
            return "the search is running; stop it first"
    elif not path.is_dir() or not is_run(path):
        return "not a keras-zoo run or search; refusing to delete it"
    elif run_status(path)["status"] == "running":
        return "running; stop it first"
    if not os.access(path.parent, os.W_OK | os.X_OK):
        return f"{path.parent} cannot be written (permission denied, or a read-only file system)"
    try:
        handle = locks.enter_context(lock_path(path).open("a"))
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return "another command is writing it (a replacement, or --resume)"
    except OSError as e:
        return f"cannot lock it ({e.strerror})"
    return ""


def _delete(path: Path, runs_dir: str) -> str:
    """Renamed to a hidden `.NAME.trash` first, so a kill never leaves half a run under its name;
    a run's hidden siblings (an unfinished replacement, the old copy of a swap) and lock go too."""
    size = sum(
        os.lstat(os.path.join(folder, f)).st_size
        for folder, _, files in os.walk(path)
        for f in files
    )
    run, trash = is_run(path), path.with_name(f".{path.name}.trash")
    shutil.rmtree(trash, ignore_errors=True)
    path.rename(trash)
    shutil.rmtree(trash)
    if run:
        for sibling in (partial_path(path), old_path(path)):
            shutil.rmtree(sibling, ignore_errors=True)
    lock_path(path).unlink(missing_ok=True)
    return f"deleted {_name(path, runs_dir)} ({_size(size)} freed)"


def _size(size: float) -> str:
    for unit in ("bytes", "KiB", "MiB"):
        if size < 1024:
            return f"{size:.0f} {unit}" if unit == "bytes" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GiB"


# ---------------------------------------------------------------------------------------- commands
def runs_command(
    patterns: Sequence[str],
    runs_dir: str,
    sort: str | None,
    as_json: bool,
    delete_names: Sequence[str] | None,
) -> str:
    """What `keras-zoo runs` prints."""
    if delete_names:
        if patterns:
            raise UserError("--delete takes the names itself; leave out the patterns")
        return "\n".join(delete(delete_names, runs_dir))
    rows = [row(path, runs_dir) for path in find(patterns, runs_dir)]
    rows = sort_rows(rows, sort)
    if as_json:
        return json.dumps(rows, indent=2)
    return (
        format_rows(rows)
        if rows
        else f"no runs or searches under {', '.join(patterns) or runs_dir}"
    )
