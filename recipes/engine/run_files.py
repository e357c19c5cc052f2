"""A run's and a search's own files, read back with the shape their readers rely on checked.

A file that is not JSON (or YAML), or holds the wrong shape (a list where a mapping belongs, a
status that is a number), raises `RunFileError`: a one-line `UserError` naming the file and what is
wrong, never an AttributeError three calls later. `keras-zoo runs` shows such a run as
`unreadable: <file>: <why>` and lists the others.

    >>> import tempfile, pathlib
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "run.json"
    >>> _ = path.write_text('{"status": 7}')
    >>> read_run_file(path)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    recipes.engine.run_files.RunFileError: .../run.json: 'status' is 7, not text
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from recipes.engine.config import yaml_error
from zoo.errors import UserError

STATUSES = ("running", "finished", "failed", "interrupted")
NUMBER = (int, float)


class RunFileError(UserError):
    """A run or search file that cannot be used: `file` names it, `why` says what is wrong."""

    def __init__(self, file: Path, why: str):
        self.file, self.why = Path(file), why
        super().__init__(f"{self.file}: {why}")

    @property
    def short(self) -> str:
        """`<file name>: <why>`, for a line that already names the run."""
        return f"{self.file.name}: {self.why}"


def _kinds(expected) -> str:
    kinds = expected if isinstance(expected, tuple) else (expected,)
    names = {
        dict: "a mapping",
        list: "a list",
        str: "text",
        int: "a number",
        float: "a number",
        bool: "true/false",
    }
    return " or ".join(dict.fromkeys(names.get(k, k.__name__) for k in kinds))


def _fields(value: Any, required: dict, optional: dict | None = None) -> str:
    """The first problem of `value` as a mapping with these keys and types ("" when none)."""
    if not isinstance(value, dict):
        return f"holds {_kinds(type(value))}, not a mapping"
    for key, expected in {**required, **(optional or {})}.items():
        if key not in value:
            if key in required:
                return f"has no '{key}'"
            continue
        item = value[key]
        if isinstance(item, bool) and bool not in (
            expected if isinstance(expected, tuple) else (expected,)
        ):
            return f"'{key}' is {item!r}, not {_kinds(expected)}"
        if not isinstance(item, expected):
            return f"'{key}' is {item!r}"[:80] + f", not {_kinds(expected)}"
    return ""


def _run_record(value: Any) -> str:
    problem = _fields(
        value,
        {"status": str},
        {
            "created_at": NUMBER,
            "updated_at": NUMBER,
            "finished_at": NUMBER,
            "pid": int,
            "command": list,
            "recipe": str,
            "origin": (list, str),
            "reason": str,
            "runtime": dict,
            "earlier_runtimes": list,
        },
    )
    if not problem and value["status"] not in STATUSES:
        problem = f"'status' is {value['status']!r}, not one of {', '.join(STATUSES)}"
    return problem


def _metrics(value: Any) -> str:
    problem = _fields(
        value, {}, {"chosen_epoch": dict, "last_epoch": dict, "train_seconds": (int, float)}
    )
    if problem:
        return problem
    for split, report in value.items():
        if split != "train_seconds" and not isinstance(report, dict):
            return f"'{split}' is {_kinds(type(report))}, not a mapping"
    return _fields(
        value.get("chosen_epoch", {"epoch": 0, "of": 0}),
        {"epoch": int, "of": int},
        {"chosen_on": str, "monitor": str},
    ) or _fields(value.get("last_epoch", {"epoch": 0}), {"epoch": int})


def _task(value: Any) -> str:
    return _fields(value, {}, {"labels": list, "tags": list})


def _config(value: Any) -> str:
    return _fields(
        value, {}, {"data": dict, "model": dict, "train": dict, "run": dict, "tuning": dict}
    )


def _results(value: Any) -> str:
    problem = _fields(value, {"trials": list}, {"objective": str, "direction": str})
    if not problem:
        problem = next(
            (
                f"trial {i + 1} is not a mapping"
                for i, t in enumerate(value["trials"])
                if not isinstance(t, dict)
            ),
            "",
        )
    return problem


def _trial_result(value: Any) -> str:
    return _fields(value, {}, {"status": str, "metrics": dict})


def _data_summary(value: Any) -> str:
    if not isinstance(value, dict):
        return f"holds {_kinds(type(value))}, not a mapping"
    return next(
        (
            f"'{split}' is not a mapping"
            for split, row in value.items()
            if not isinstance(row, dict)
        ),
        "",
    )


SHAPES: dict[str, Callable[[Any], str]] = {
    "run.json": _run_record,
    "metrics.json": _metrics,
    "task.json": _task,
    "config.yaml": _config,
    "search.yaml": _config,
    "results.json": _results,
    "result.json": _trial_result,
    "data.json": _data_summary,
}


def read_run_file(path: Path) -> dict:
    """The mapping in a run's or search's file (its name says which shape it must have: run.json,
    metrics.json, task.json, config.yaml, search.yaml, results.json, result.json, data.json).
    A missing file raises FileNotFoundError; an unreadable or malformed one `RunFileError`."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise
    except (OSError, UnicodeDecodeError) as e:
        raise RunFileError(path, f"cannot be read ({getattr(e, 'strerror', None) or e})") from None
    try:
        value = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except json.JSONDecodeError as e:
        raise RunFileError(path, f"not JSON (line {e.lineno}, column {e.colno}: {e.msg})") from None
    except yaml.YAMLError as e:
        position, problem = yaml_error(e)
        where = f"line {position[0]}, column {position[1]}: " if position else ""
        raise RunFileError(path, f"not YAML ({where}{problem})") from None
    if value is None and path.suffix != ".json":
        value = {}  # an empty YAML file
    problem = SHAPES.get(path.name, lambda v: _fields(v, {}))(value)
    if problem:
        raise RunFileError(path, problem)
    return value


def read_if_present(path: Path) -> dict:
    """`read_run_file`, or {} where the file does not exist (yet)."""
    try:
        return read_run_file(path)
    except FileNotFoundError:
        return {}
