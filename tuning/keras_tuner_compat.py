"""Every use keras-zoo makes of Keras Tuner's internals, in one place.

Tested with keras-tuner 1.4.8 (setup.cfg pins >=1.4.8,<1.5).

Keras Tuner's public API covers running its own search loop; keras-zoo needs a little more (a time
budget, resume that trusts the trial files, dead workers ended, grid search that keeps its place),
and that means reaching into names Keras Tuner does not promise to keep. They are all here, each
behind a small function that says why it is needed. tests/test_compat.py checks every one of them
(`PRIVATE_IMPORTS`, `ORACLE_ATTRIBUTES`, `GRID_ORACLE_ATTRIBUTES` and the call shapes) and fails
naming the internal and the installed version; before widening the pin, run it, fix what it names
here, and update TESTED_VERSION.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from concurrent import futures
from typing import Any

import grpc
import keras_tuner

# Exported under `keras_tuner.engine.*`, not the top-level `keras_tuner.*` namespace the documentation
# covers; the rest of `tuning` takes them from here. `BaseTuner` is the tuner without a model (a
# trial here is a recipe run).
from keras_tuner.engine.base_tuner import BaseTuner
from keras_tuner.engine.trial import Trial
from keras_tuner.engine.trial import TrialStatus as TrialStatus  # re-exported for oracles, search
from keras_tuner.src import protos
from keras_tuner.src.distribute.oracle_chief import OracleServicer
from keras_tuner.src.tuners.gridsearch import LinkedList

TESTED_VERSION = "1.4.8"
INSTALLED_VERSION: str = keras_tuner.__version__

# What the functions below use, for tests/test_compat.py: module -> names imported from it.
PRIVATE_IMPORTS = {
    "keras_tuner.engine.base_tuner": ["BaseTuner"],
    "keras_tuner.engine.trial": ["Trial", "TrialStatus"],
    "keras_tuner.src.tuners.gridsearch": ["LinkedList"],
    "keras_tuner.src.protos": ["get_service_grpc"],
    "keras_tuner.src.distribute.oracle_chief": ["OracleServicer"],
}
# Attribute -> the name of the type it must have, on a freshly made oracle of every kind (and grid
# search's own); `Oracle.max_trials` need only exist.
ORACLE_ATTRIBUTES = {
    "trials": "dict",
    "ongoing_trials": "dict",
    "tuner_ids": "set",
    "start_order": "list",
    "end_order": "list",
    "_retry_queue": "list",
}
GRID_ORACLE_ATTRIBUTES = {"_ordered_ids": "LinkedList", "_populate_next": "list"}


# ---------------------------------------------------------------------- who runs what (the oracle)
def running_trial(oracle, tuner_id: str) -> Trial | None:
    """The trial `tuner_id` is running, if any. `Oracle.ongoing_trials` (tuner id -> trial) is the
    only record of who runs what: the time budget lets a tuner with a running trial finish it, and
    `reap` ends the trial of a dead worker."""
    return oracle.ongoing_trials.get(tuner_id)


def any_running(oracle) -> bool:
    """Whether any trial is running: a finished tuner waits rather than leaves while one is, so a
    retry of that trial has a tuner to run it."""
    return bool(oracle.ongoing_trials)


def tuners(oracle) -> list[str]:
    """The tuner ids the oracle counts as taking part (`Oracle.tuner_ids`); the chief ends only
    once none is left."""
    return sorted(oracle.tuner_ids)


def keep_tuner(oracle, tuner_id: str) -> None:
    """Count `tuner_id` as taking part again: Keras Tuner drops a tuner when it hands it STOPPED,
    which keras-zoo turns into IDLE while trials run."""
    oracle.tuner_ids.add(tuner_id)


def drop_tuner(oracle, tuner_id: str) -> None:
    """Stop counting `tuner_id` (it was stopped by the time budget, or is dead)."""
    oracle.tuner_ids.discard(tuner_id)


def set_max_trials(oracle, max_trials: int) -> None:
    """Cap the number of trials of an oracle whose constructor has no `max_trials` (Hyperband):
    the base `Oracle.create_trial` stops at `oracle.max_trials` whatever the algorithm."""
    oracle.max_trials = max_trials


# --------------------------------------------------------------------- resume: the oracle's queues
def started_trial_ids(oracle) -> list[str]:
    """The trial ids in the order they started (`Oracle.start_order`)."""
    return list(oracle.start_order)


def record_started(oracle, trial: Trial) -> None:
    """Record a trial found in the trial files as started, and its values as tried (the private
    `_record_values`) so that the algorithm does not propose them again. `reload` needs this when
    a kill landed after the trial file was saved but before the oracle was."""
    if trial.trial_id not in oracle.start_order:
        oracle.start_order.append(trial.trial_id)
        oracle._record_values(trial)


def record_finished(oracle, trial_id: str) -> None:
    """Record a trial the trial files show finished: out of the retry queue (the private
    `_retry_queue`, where Keras Tuner's reload puts every trial the oracle file says was running),
    into `end_order`, so that it is not trained again."""
    if trial_id in oracle._retry_queue:
        oracle._retry_queue.remove(trial_id)
    if trial_id not in oracle.end_order:
        oracle.end_order.append(trial_id)


def queue_for_retry(oracle, trial_id: str) -> None:
    """Queue a trial that started but never finished to run again (the private `_retry_queue`:
    Keras Tuner has no public way to queue a trial)."""
    if trial_id not in oracle._retry_queue:
        oracle._retry_queue.append(trial_id)


def restore_grid_position(oracle, trial_ids: list[str]) -> None:
    """Give a reloaded grid search oracle back its place in the grid, which Keras Tuner does not
    save (keras-tuner#1055): its private `_ordered_ids` (a `LinkedList` of the trials in grid
    order, from its `_compare`) and `_populate_next` (the trials whose successor it proposes
    next; with every trial queued, successors already tried are skipped)."""

    def compare(a: str, b: str) -> int:
        return oracle._compare(
            oracle.trials[a].hyperparameters.values, oracle.trials[b].hyperparameters.values
        )

    order = sorted(trial_ids, key=functools.cmp_to_key(compare))
    oracle._ordered_ids = LinkedList()
    for trial_id in order:
        oracle._ordered_ids.insert(trial_id)
    oracle._populate_next = list(order)


# ----------------------------------------------------------------------------------- the tuner
def run_and_update_trial(tuner: BaseTuner, trial: Trial) -> None:
    """One step of `BaseTuner.search`: `run_trial`, report its metrics to the oracle and set the
    trial's status (COMPLETED; FAILED on `FailedTrialError`; INVALID, so retried, on any other
    error; a `FatalError` is raised). keras-zoo runs its own search loop (waiting on IDLE, a
    progress line per trial, serving workers) around this step, which has only a private name
    (`_try_run_and_update_trial`)."""
    tuner._try_run_and_update_trial(trial)


# ------------------------------------------------------------------------- the chief's server
def make_oracle_server(oracle) -> tuple[Any, Any]:
    """`(server, servicer)`: a gRPC server, not yet bound or started, serving `oracle` to workers
    with Keras Tuner's own `OracleServicer`. Keras Tuner's `oracle_chief.start_server` binds,
    serves and waits in one call, with no way to end the trial of a dead worker
    (keras-tuner#915), so keras-zoo runs its own loop around the servicer."""

    # Imported here, as Keras Tuner does, to load the protos only on a chief.

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=1))
    servicer = OracleServicer(oracle)
    protos.get_service_grpc().add_OracleServicer_to_server(servicer, server)
    return server, servicer


def search_over(oracle, servicer) -> bool:
    """Keras Tuner's own test for the chief to stop serving: the oracle has told a worker STOPPED
    (`OracleServicer.stop_triggered`), no trial is running and no worker is left."""
    return servicer.stop_triggered and not oracle.ongoing_trials and not oracle.tuner_ids


def call_shapes(oracle, grid_oracle) -> list[tuple[str, Callable, tuple]]:
    """For tests/test_compat.py: the Keras Tuner callables the functions above call, each with the
    arguments they pass it (placeholders), for `inspect.signature(callable).bind(*arguments)`."""

    return [
        ("Oracle._record_values(trial)", oracle._record_values, ("trial",)),
        ("GridSearchOracle._compare(a, b)", grid_oracle._compare, ({}, {})),
        ("LinkedList.insert(data)", LinkedList().insert, ("trial_id",)),
        (
            "BaseTuner._try_run_and_update_trial(trial)",
            BaseTuner._try_run_and_update_trial,
            ("tuner", "trial"),
        ),
        ("OracleServicer(oracle)", OracleServicer, (oracle,)),
        (
            "service_pb2_grpc.add_OracleServicer_to_server(servicer, server)",
            protos.get_service_grpc().add_OracleServicer_to_server,
            ("servicer", "server"),
        ),
    ]
