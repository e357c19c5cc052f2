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

import functools
import time
from typing import Callable

import keras_tuner
from keras_tuner.engine.trial import Trial, TrialStatus

FINISHED = (TrialStatus.COMPLETED, TrialStatus.FAILED)


class SearchOracleMixin:
    deadline: float | None = None  # time.time() after which no trial starts

    @keras_tuner.synchronized
    def create_trial(self, tuner_id: str) -> Trial:
        if self.deadline is not None and time.time() >= self.deadline and tuner_id not in self.ongoing_trials:
            self.tuner_ids.discard(tuner_id)
            return Trial(self.hyperparameters.copy(), status=TrialStatus.STOPPED)
        trial = super().create_trial(tuner_id)
        if trial.status == TrialStatus.STOPPED and self.ongoing_trials:
            self.tuner_ids.add(tuner_id)  # stay: a running trial may come back for a retry
            return Trial(self.hyperparameters.copy(), status=TrialStatus.IDLE)
        return trial

    def reload(self) -> None:
        super().reload()
        for trial_id in sorted(self.trials):
            trial = self.trials[trial_id]
            if trial_id not in self.start_order:
                self.start_order.append(trial_id)
                self._record_values(trial)
            if trial.status in FINISHED:
                if trial_id in self._retry_queue:
                    self._retry_queue.remove(trial_id)
                if trial_id not in self.end_order:
                    self.end_order.append(trial_id)
            elif trial_id not in self._retry_queue:  # started, never finished: run it again
                self._retry_queue.append(trial_id)

    @keras_tuner.synchronized
    def reap(self, is_alive: Callable[[str], bool]) -> list[str]:
        """Drop the tuners `is_alive` says are gone; their running trials end as INVALID (so they
        are retried while `max_retries_per_trial` allows, else recorded as failed). Returns the
        tuner ids dropped."""
        gone = [tuner_id for tuner_id in sorted(self.tuner_ids) if not is_alive(tuner_id)]
        for tuner_id in gone:
            self.tuner_ids.discard(tuner_id)
            trial = self.ongoing_trials.get(tuner_id)
            if trial is not None:
                trial.status = TrialStatus.INVALID
                trial.message = f"worker {tuner_id} stopped answering during the trial"
                self.end_trial(trial)
        return gone


class GridSearchOracle(SearchOracleMixin, keras_tuner.oracles.GridSearchOracle):
    def reload(self) -> None:
        super().reload()
        # Rebuild the grid bookkeeping Keras Tuner does not save: trials in grid order, and every
        # trial queued to propose its successor (tried successors are skipped).
        from keras_tuner.src.tuners.gridsearch import LinkedList  # noqa: PLC0415

        order = sorted(self.start_order, key=functools.cmp_to_key(
            lambda a, b: self._compare(self.trials[a].hyperparameters.values, self.trials[b].hyperparameters.values)))
        self._ordered_ids = LinkedList()
        for trial_id in order:
            self._ordered_ids.insert(trial_id)
        self._populate_next = list(order)


class RandomSearchOracle(SearchOracleMixin, keras_tuner.oracles.RandomSearchOracle):
    pass


class BayesianOptimizationOracle(SearchOracleMixin, keras_tuner.oracles.BayesianOptimizationOracle):
    pass


class HyperbandOracle(SearchOracleMixin, keras_tuner.oracles.HyperbandOracle):
    pass


def make_oracle(algorithm: str, objective, hyperparameters, max_trials: int, seed: int, max_retries: int,
                hyperband_max_epochs: int, hyperband_factor: int):
    common = dict(objective=objective, hyperparameters=hyperparameters, seed=seed, allow_new_entries=False,
                  tune_new_entries=False, max_retries_per_trial=max_retries)
    if algorithm == "hyperband":
        oracle = HyperbandOracle(max_epochs=hyperband_max_epochs, factor=hyperband_factor, **common)
        oracle.max_trials = max_trials  # Hyperband's own schedule decides too; whichever ends first
        return oracle
    cls = {"random": RandomSearchOracle, "bayesian": BayesianOptimizationOracle, "grid": GridSearchOracle}[algorithm]
    return cls(max_trials=max_trials, **common)
