"""Keras Tuner's four search algorithms, with what a long search needs and Keras Tuner 1.4.8 lacks.

- A time budget: once it is spent, no trial starts (running ones finish).
- Resume that keeps every finished trial. A kill can land between Keras Tuner saving a trial file
  and saving the oracle, leaving the two out of step (a finished trial queued to run again, or a
  started trial that never runs); the trial files are the truth, so `reload` re-derives the queues
  from them. Grid search also loses its place in the grid on reload (keras-tuner#1055) and gets it
  back here.
- Workers that die: `reap` ends the trial of a worker that stopped answering, so it is retried (or
  failed, by the retry policy) and the chief does not wait for it forever (keras-tuner#915).
  While any trial is running a finished worker waits rather than leaving, so such a retry always
  has a worker to run it.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import keras_tuner

from tuning import keras_tuner_compat as compat
from tuning.keras_tuner_compat import Trial, TrialStatus

FINISHED = (TrialStatus.COMPLETED, TrialStatus.FAILED)


class SearchOracleMixin:
    deadline: float | None = None  # time.time() after which no trial starts

    @keras_tuner.synchronized
    def create_trial(self, tuner_id: str) -> Trial:
        if (
            self.deadline is not None
            and time.time() >= self.deadline
            and compat.running_trial(self, tuner_id) is None
        ):
            compat.drop_tuner(self, tuner_id)
            return Trial(self.hyperparameters.copy(), status=TrialStatus.STOPPED)
        trial = super().create_trial(tuner_id)
        if trial.status == TrialStatus.STOPPED and compat.any_running(self):
            compat.keep_tuner(self, tuner_id)  # stay: a running trial may come back for a retry
            return Trial(self.hyperparameters.copy(), status=TrialStatus.IDLE)
        return trial

    def reload(self) -> None:
        super().reload()
        for trial_id in sorted(self.trials):
            trial = self.trials[trial_id]
            compat.record_started(self, trial)
            if trial.status in FINISHED:
                compat.record_finished(self, trial_id)
            else:  # started, never finished: run it again
                compat.queue_for_retry(self, trial_id)

    @keras_tuner.synchronized
    def reap(self, is_alive: Callable[[str], bool]) -> list[str]:
        """Drop the tuners `is_alive` says are gone; their running trials end as INVALID (so they
        are retried while `max_retries_per_trial` allows, else recorded as failed). Returns the
        tuner ids dropped."""
        gone = [tuner_id for tuner_id in compat.tuners(self) if not is_alive(tuner_id)]
        for tuner_id in gone:
            compat.drop_tuner(self, tuner_id)
            trial = compat.running_trial(self, tuner_id)
            if trial is not None:
                trial.status = TrialStatus.INVALID
                trial.message = f"worker {tuner_id} stopped answering during the trial"
                self.end_trial(trial)
        return gone


class GridSearchOracle(SearchOracleMixin, keras_tuner.oracles.GridSearchOracle):
    def reload(self) -> None:
        super().reload()
        compat.restore_grid_position(self, compat.started_trial_ids(self))


class RandomSearchOracle(SearchOracleMixin, keras_tuner.oracles.RandomSearchOracle):
    pass


class BayesianOptimizationOracle(SearchOracleMixin, keras_tuner.oracles.BayesianOptimizationOracle):
    pass


class HyperbandOracle(SearchOracleMixin, keras_tuner.oracles.HyperbandOracle):
    pass


def make_oracle(
    algorithm: str,
    objective,
    hyperparameters,
    max_trials: int,
    seed: int,
    max_retries: int,
    hyperband_max_epochs: int,
    hyperband_factor: int,
):
    common = dict(
        objective=objective,
        hyperparameters=hyperparameters,
        seed=seed,
        allow_new_entries=False,
        tune_new_entries=False,
        max_retries_per_trial=max_retries,
    )
    if algorithm == "hyperband":
        oracle = HyperbandOracle(max_epochs=hyperband_max_epochs, factor=hyperband_factor, **common)
        # Hyperband's own schedule decides too; whichever ends first
        compat.set_max_trials(oracle, max_trials)
        return oracle
    cls = {
        "random": RandomSearchOracle,
        "bayesian": BayesianOptimizationOracle,
        "grid": GridSearchOracle,
    }[algorithm]
    return cls(max_trials=max_trials, **common)
