"""One directory per run, `runs/<recipe>/<name>/`, and the rules that keep runs whole.

    run.json           status: running | finished | failed (with its reason) | interrupted; marks a keras-zoo run
    config.yaml        the resolved config          task.json       what loading the model needs (labels, lengths)
    checkpoints/       best.weights.h5, phase markers               backup/    BackupAndRestore state (resume)
    logs/              TensorBoard event files      history.csv     per-epoch metrics
    metrics.json       the final evaluation report  export/         model.keras, saved_model/

The rules (`plan_run` checks them, `open_run_for_writing` keeps them):
- everything is checked before a run directory is touched; a new run is written in place, so
  TensorBoard can follow it live (its directory appears whole: made as `.<name>.creating`, then
  renamed; a directory is deleted by renaming it to `.<name>.trash` first);
- `--overwrite` builds the new run in a hidden sibling, `.<name>.partial/`, and swaps it in only
  when it has finished: the old run stays whole until then. The swap renames the old run to
  `.<name>.old`, the new one into place, then deletes the old; a kill between the renames is
  repaired by the next command on that name;
- only a keras-zoo run is ever deleted or replaced: a directory with `run.json`, or (runs made
  before it existed) with `config.yaml`, `history.csv` and `checkpoints/`;
- a failed run never blocks the next one: training that name again replaces it when the new run
  finishes; an interrupted one is continued with `--resume` or replaced with `--overwrite`;
- one command writes a run at a time: `.<name>.lock` beside it is locked while it runs (the lock
  goes with the process, so a killed command leaves the run `interrupted`, not locked).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from recipes.engine.run_files import RunFileError, read_if_present, read_run_file
from zoo.errors import UserError

STATUS_FILE = "run.json"
UNREADABLE = "unreadable"  # run_status of a run whose run.json is malformed


@dataclass(frozen=True)
class RunDir:
    path: Path
    tensorboard: bool = True  # write TensorBoard event files (the config's run.tensorboard)

    config = property(lambda self: self.path / "config.yaml")
    status = property(lambda self: self.path / STATUS_FILE)
    task = property(lambda self: self.path / "task.json")
    best_weights = property(lambda self: self.path / "checkpoints" / "best.weights.h5")
    # checkpoints/last.weights.h5: the last epoch's weights, from the end of training until the
    # engine has reported their figures (metrics.json's last_epoch)
    last_weights = property(lambda self: self.path / "checkpoints" / "last.weights.h5")
    backup = property(lambda self: self.path / "backup")
    logs = property(lambda self: self.path / "logs")
    history = property(lambda self: self.path / "history.csv")
    metrics = property(lambda self: self.path / "metrics.json")
    # each split's source, size and fingerprint
    data = property(lambda self: self.path / "data.json")
    export = property(lambda self: self.path / "export")
    keras_model = property(lambda self: self.path / "export" / "model.keras")

    def write_json(self, path: Path, data) -> None:
        write_json(path, data)

    def read_json(self, path: Path) -> dict:
        """One of the run's files, its shape checked (recipes/engine/run_files.py)."""
        try:
            return read_run_file(path)
        except FileNotFoundError:
            raise UserError(f"{path}: not found; is {self.path} a finished run?") from None


def write_json(path: Path, data) -> None:
    """Write whole or not at all (a kill mid-write leaves the previous file)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=float) + "\n")
    tmp.replace(path)


def is_run(path: Path) -> bool:
    """Whether `path` is a keras-zoo run (so it may be replaced or deleted): it has run.json."""
    return (path / STATUS_FILE).is_file()


def run_status(path: Path) -> dict:
    """The run's status record; `running` becomes `interrupted` when no live command holds the run's
    lock, and a malformed run.json is `unreadable`, with the reason."""
    file = path / STATUS_FILE
    try:
        status = read_run_file(file)
    except FileNotFoundError:  # deleted since it was listed
        status = {"status": UNREADABLE, "reason": f"{STATUS_FILE}: not found"}
    except RunFileError as e:
        status = {"status": UNREADABLE, "reason": e.short}
    if status.get("status") == "running" and not is_locked(lock_path(_final_path(path))):
        status["status"] = "interrupted"
    return status


def _final_path(path: Path) -> Path:
    """The run's own name for a path that may be its hidden partial sibling."""
    name = path.name
    if name.startswith(".") and name.endswith(".partial"):
        return path.with_name(name[1 : -len(".partial")])
    return path


def partial_path(final: Path) -> Path:
    return final.with_name(f".{final.name}.partial")


def old_path(final: Path) -> Path:
    return final.with_name(f".{final.name}.old")


def lock_path(final: Path) -> Path:
    return final.with_name(f".{final.name}.lock")


def _scratch_path(final: Path, what: str) -> Path:
    """A hidden sibling for a directory being made (`creating`) or deleted (`trash`)."""
    return final.with_name(f".{final.name}.{what}")


@dataclass(frozen=True)
class RunPlan:
    """Where a training command will write: `work` is `final` itself (a new run, or a resumed one)
    or its partial sibling (a replacement, swapped in at the end)."""

    final: Path
    work: Path
    resume: bool
    replaces: str = ""  # the status of the run that `work` replaces when it finishes ("" for none)

    @property
    def in_place(self) -> bool:
        return self.work == self.final


def plan_run(
    runs_dir: str,
    recipe: str,
    name: str,
    *,
    overwrite: bool = False,
    resume: bool | str = False,
    exact_dir: str = "",
) -> RunPlan:
    """Check where a run will go and whether it may, before anything is read or written (a swap
    that a kill cut short is completed first). `resume="auto"` resumes when there is an
    unfinished run of this name (interrupted or failed), and starts a new one when there is none."""
    if overwrite and resume is True:
        raise UserError("--overwrite and --resume: choose one")
    if exact_dir:
        final = Path(exact_dir).resolve()  # "." or "runs/.." name the directory they stand for
        if not final.name:
            raise UserError(
                f"run.dir: '{exact_dir}' is the root directory; name a directory for the run"
            )
    else:
        if name and ("/" in name or name.startswith(".") or name != name.strip()):
            raise UserError(
                f"run.name: '{name}' must be a plain name (no '/', not starting with '.' or a space); "
                "use run.runs_dir or run.dir for another place"
            )
        final = Path(runs_dir) / recipe / (name or time.strftime("%Y%m%d-%H%M%S"))
    recover_swap(final)
    _check_writable(final)
    partial = partial_path(final)
    if resume == "auto":
        resume = not overwrite and any(
            _resumable(candidate) and run_status(candidate)["status"] != "finished"
            for candidate in (partial, final)
        )
    if resume:
        for candidate in (partial, final):  # a replacement in progress is what was interrupted
            if _resumable(candidate):
                status = run_status(candidate)
                state = status["status"]
                if state == "running":
                    raise UserError(f"{candidate}: another command is training this run right now")
                if state == "finished":
                    raise UserError(
                        f"{candidate}: finished; nothing to resume (--overwrite trains it again)"
                    )
                if state == UNREADABLE:
                    raise UserError(
                        f"{candidate}: {status['reason']}; it cannot be resumed "
                        "(--overwrite trains it again)"
                    )
                return RunPlan(
                    final,
                    candidate,
                    resume=True,
                    replaces=run_status(final)["status"]
                    if candidate == partial and final.exists()
                    else "",
                )
        raise UserError(f"{final}: nothing to resume (no run there); start it without --resume")
    if not final.exists() or (final.is_dir() and not any(final.iterdir())):
        if partial.exists() and not overwrite:
            raise UserError(
                f"{partial}: an interrupted run of this name is there; --resume continues it, "
                "--overwrite starts again"
            )
        return RunPlan(final, final if not partial.exists() else partial, resume=False)
    if not final.is_dir() or not is_run(final):
        raise UserError(
            f"{final}: exists and is not a keras-zoo run; refusing to replace it (choose another "
            "name or directory)"
        )
    status = run_status(final)
    state = status["status"]
    if state == "running":
        raise UserError(
            f"{final}: another command (pid {status.get('pid', '?')}) is training this run right now"
        )
    if state == "failed" or overwrite:
        replacing = run_status(partial)["status"] if partial.exists() else ""
        if replacing == "running":
            raise UserError(
                f"{partial}: another command is training a replacement of this run right now"
            )
        if replacing == "interrupted" and not overwrite:  # its epochs are kept unless asked
            raise UserError(
                f"{partial}: an interrupted replacement of this run is there; --resume continues it, "
                "--overwrite starts again"
            )
        return RunPlan(final, partial, resume=False, replaces=state)
    if state == "interrupted":
        raise UserError(
            f"{final}: an interrupted run of this name is there; --resume continues it, --overwrite "
            "replaces it (the old run stays until the new one finishes)"
        )
    if state == UNREADABLE:
        raise UserError(
            f"{final}: a run of this name is there, but {status['reason']}; --overwrite replaces it "
            "(the old run stays until the new one finishes)"
        )
    raise UserError(
        f"{final}: a finished run of this name is there; --overwrite replaces it (the old run stays "
        "until the new one finishes), or choose another --name"
    )


def plan_training_run(
    run_cfg, recipe: str, *, overwrite: bool = False, resume: bool = False
) -> RunPlan:
    """`plan_run` for a config's `run` section: its place (`runs_dir`, `name`, `dir`), and its
    `resume: auto` unless the command says `--resume`."""
    return plan_run(
        run_cfg.runs_dir,
        recipe,
        run_cfg.name,
        overwrite=overwrite,
        resume=resume or ("auto" if run_cfg.resume == "auto" else False),
        exact_dir=run_cfg.dir,
    )


def _resumable(path: Path) -> bool:
    return path.is_dir() and is_run(path) and (path / "config.yaml").is_file()


def _check_writable(final: Path) -> None:
    """Fail now, not after reading the data, when the runs directory cannot be written."""
    existing = final.parent
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise UserError(f"{existing}: is a file, not a directory; the run cannot go under it")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UserError(
            f"{existing}: cannot write there (permission denied, or a read-only file system); choose another --runs-dir"
        )


def recover_swap(final: Path) -> None:
    """Finish or undo a swap that a kill cut short (see the module docstring); nothing while
    another command holds the run's lock (it may be swapping right now)."""
    old, partial = old_path(final), partial_path(final)
    if not (old.exists() or partial.exists()) or not final.parent.is_dir():
        return
    try:
        handle = lock_path(final).open("a")
    except OSError:
        return
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return
        finished = partial.exists() and run_status(partial)["status"] == "finished"
        if old.exists():
            if final.exists():  # the new run is in place: only the old one's deletion was left
                shutil.rmtree(old)
            elif finished:
                swap_in(partial, final)
            else:  # the new run never finished: the old one goes back
                old.rename(final)
        elif finished:  # killed between marking the new run finished and the first rename
            swap_in(partial, final)


class RunWriter:
    """The run a training command writes (see `open_run_for_writing`)."""

    def __init__(self, plan: RunPlan, run: RunDir):
        self.plan, self.run = plan, run

    def set_status(self, status: str, **fields) -> None:
        """Write run.json: the status, this command, and `fields`; what earlier writes recorded
        (recipe, origin, runtime, ...) stays, except the reason a run failed and when it finished."""
        record = {
            "status": status,
            "pid": os.getpid(),
            "command": sys.argv,
            "updated_at": time.time(),
            **fields,
        }
        try:
            previous = read_if_present(self.run.status)
        except RunFileError:  # written over: this command's record is the one to keep
            previous = {}
        kept = {k: v for k, v in previous.items() if k not in STATUS_OF_ONE_COMMAND}
        write_json(self.run.status, {**kept, **record})


# What run.json says of the command that last wrote it only: not carried to the next status.
STATUS_OF_ONE_COMMAND = ("reason", "finished_at")


@contextlib.contextmanager
def open_run_for_writing(
    plan: RunPlan, recipe: str, tensorboard: bool = True, origin: Sequence[str] | str = ""
) -> Iterator[RunWriter]:
    """Lock the run's name, create (or reopen) the directory the plan writes, and keep its status:
    `running` inside, `finished` on success (a partial run is then swapped in), `failed` with the
    one-line reason on an error, `interrupted` on Ctrl-C. A new run's record keeps `origin` (the
    command that started it) for its model card."""
    lock = lock_path(plan.final)
    try:
        lock.parent.mkdir(parents=True, exist_ok=True)
        handle = lock.open("a")
    except OSError as e:
        raise UserError(f"{lock.parent}: cannot write the run there ({e.strerror})") from None
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UserError(
                f"{plan.final}: another command is writing this run right now"
            ) from None
        _check_unchanged(plan)
        writer = RunWriter(plan, RunDir(plan.work, tensorboard=tensorboard))
        try:
            if plan.resume:
                writer.set_status("running")
            else:
                _create(plan, writer, recipe, origin)
        except OSError as e:
            raise UserError(f"{plan.work}: cannot write the run there ({e.strerror})") from None
        try:
            yield writer
        except KeyboardInterrupt:
            writer.set_status("interrupted")
            raise
        except BaseException as e:
            writer.set_status("failed", reason=_one_line(e))
            raise
        writer.set_status("finished", finished_at=time.time())
        if not plan.in_place:
            swap_in(plan.work, plan.final)


def _create(
    plan: RunPlan, writer: RunWriter, recipe: str, origin: Sequence[str] | str = ""
) -> None:
    """Make the run's directory whole or not at all: built as a hidden sibling with its status
    record, then renamed into place (a kill leaves only hidden scratch, removed next time). A
    replacement's earlier partial is renamed away before it is deleted, for the same reason."""
    creating, trash = _scratch_path(plan.final, "creating"), _scratch_path(plan.final, "trash")
    for scratch in (creating, trash):
        if scratch.exists():
            shutil.rmtree(scratch)
    if plan.work.exists():
        if not is_run(plan.work) and any(plan.work.iterdir()):
            raise UserError(
                f"{plan.work}: exists and is not a keras-zoo run; refusing to replace it"
            )
        plan.work.rename(trash)
        shutil.rmtree(trash)
    (creating / "checkpoints").mkdir(parents=True)
    (creating / "export").mkdir()
    RunWriter(plan, RunDir(creating)).set_status(
        "running",
        recipe=recipe,
        created_at=time.time(),
        origin=list(origin) if not isinstance(origin, str) else origin,
    )
    creating.rename(plan.work)


def _check_unchanged(plan: RunPlan) -> None:
    """Under the lock: the run is still as `plan_run` found it (another command may have finished
    it in between)."""
    if plan.resume or not plan.in_place:
        return
    if plan.final.exists() and any(plan.final.iterdir()):
        raise UserError(
            f"{plan.final}: run directory exists (another command made it just now); pass --overwrite "
            "to replace it or --resume to continue it"
        )


def swap_in(partial: Path, final: Path) -> None:
    """Replace `final` by the finished `partial`: old aside, new in, old deleted (see `recover_swap`)."""
    old = old_path(final)
    if final.exists():
        final.rename(old)
    partial.rename(final)
    if old.exists():
        shutil.rmtree(old)


@contextlib.contextmanager
def hold_lock(final: Path, busy: str) -> Iterator[None]:
    """Hold the lock beside `final` (`.NAME.lock`) while the block runs, as a training command holds
    its run's (a hyperparameter search holds its directory's); `busy` is the error when another
    live command holds it."""
    lock = lock_path(final)
    lock.parent.mkdir(parents=True, exist_ok=True)
    with lock.open("a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UserError(busy) from None
        yield


def open_finished_run(path: str | Path) -> RunDir:
    """An existing run, for evaluate / predict / export."""
    if not str(path).strip():
        raise UserError("run directory: empty path")
    run = RunDir(Path(path))
    recover_swap(run.path)
    if not run.path.is_dir():
        raise UserError(f"{path}: no such run directory")
    if not is_run(run.path) or not run.config.exists():
        raise UserError(
            f"{path}: not a run directory (no {'run.json' if run.config.exists() else 'config.yaml'})"
        )
    return run


def is_locked(lock: Path) -> bool:
    """Whether a live process holds `lock`."""
    try:
        with lock.open("r") as handle:  # a shared lock conflicts with the writer's exclusive one
            fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
            return False
    except BlockingIOError:
        return True
    except OSError:  # no lock file: no writer
        return False


def _one_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return (
        f"{type(error).__name__}: {lines[-1] if lines else ''}"
        if not isinstance(error, UserError)
        else lines[0]
    )
