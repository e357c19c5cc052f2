"""Hyperparameter search over a recipe's config, with Keras Tuner.

A trial is an ordinary training run of the recipe with the trial's values set in its config (see
tuning/trial.py): a search never trains any other way. By default each trial runs in a fresh
Python process, so nothing a trial leaves in memory reaches the next one.

    keras-zoo tune sentiment --config my.yaml --max-time 2h
    keras-zoo tune sentiment --name lr-search --resume          # continue a killed search

From Python:

    >>> from recipes import sentiment
    >>> from tuning import tune
    >>> cfg = sentiment.load_config(overrides=["tuning.max_trials=4"])  # doctest: +SKIP
    >>> result = tune("sentiment", cfg)  # doctest: +SKIP
    >>> result.best["metrics"]["val_accuracy"]  # doctest: +SKIP

A search directory holds:

    search.yaml               the search's config: the recipe's config and its tuning section
    keras_tuner/              Keras Tuner's oracle and trial files (what --resume reads)
    trials/trial_<id>/        run0/ (the trial's recipe run; run1/... with executions_per_trial > 1),
                              result.json, trial.log (the trial's output), its HParams session
    results.csv, results.json, best.yaml     the ranked trials and the best trial's config
    events.out.tfevents.*     the HParams experiment: tuned hyperparameters and named metrics
    workers/                  distributed search: one heartbeat file per worker
"""

from __future__ import annotations

import contextlib
import shutil
import time
from pathlib import Path
from typing import Any

from recipes.engine.config import check_config, load_config, save_config, with_values
from recipes.engine.launch import free_port
from recipes.engine.run_dir import hold_lock, is_run
from recipes.engine.run_files import read_if_present
from tuning import distributed, results
from tuning.common import TUNER_DIR, SearchDir, SearchResult, objective_of
from tuning.space import build_hyperparameters, parse_duration
from zoo.errors import UserError


# ---------------------------------------------------------------------------------------- the tuner
def make_tuner(recipe: str, cfg, search: SearchDir, verbose: int = 0):
    """A Keras Tuner tuner whose trials are runs of `recipe` (see `tuning.trial.run_trial`)."""
    import keras_tuner

    from tuning import keras_tuner_compat as compat
    from tuning.oracles import make_oracle

    # Not at the top: `python -m tuning.trial` imports the package, so this module, before it runs
    # tuning/trial.py as __main__, and runpy warns if tuning.trial is imported by then.
    from tuning.trial import run_trial

    tcfg = cfg.tuning
    objective, direction = objective_of(cfg)
    oracle = make_oracle(
        tcfg.algorithm,
        keras_tuner.Objective(objective, direction),
        build_hyperparameters(tcfg.space, type(cfg)),
        tcfg.max_trials,
        tcfg.seed,
        tcfg.max_retries_per_trial,
        tcfg.hyperband_max_epochs or cfg.train.epochs,
        tcfg.hyperband_factor,
    )

    class RecipeTuner(compat.BaseTuner):
        def run_trial(self, trial, *args, **kwargs) -> dict:
            return run_trial(
                recipe, cfg, search, trial.trial_id, trial.hyperparameters.values, verbose
            )

        def search(self, *args, **kwargs) -> None:
            if distributed.is_chief():
                self.save()
                distributed.serve(self.oracle, search, tcfg.worker_timeout_s)
                return
            self.on_search_begin()
            while True:
                trial = self.oracle.create_trial(self.tuner_id)
                if trial.status == compat.TrialStatus.STOPPED:
                    break
                if trial.status == compat.TrialStatus.IDLE:  # the oracle waits for running trials
                    time.sleep(1.0)
                    continue
                self.on_trial_begin(trial)
                started = time.time()
                compat.run_and_update_trial(self, trial)
                print(_progress_line(search, trial, objective, time.time() - started), flush=True)
                self.on_trial_end(trial)
            self.on_search_end()

    tuner = RecipeTuner(oracle=oracle, directory=str(search.path), project_name=TUNER_DIR)
    tuner.oracle.verbose = (
        verbose  # Keras Tuner's per-trial tables; keras-zoo prints its own summary
    )
    return tuner


def _progress_line(search: SearchDir, trial, objective: str, seconds: float) -> str:
    """`trial 3: COMPLETED in 42 s, val_accuracy 0.9123 (train.learning_rate=3e-05, ...)` or the error."""
    file = search.trial(trial.trial_id) / "result.json"
    result = read_if_present(file)
    head = f"trial {trial.trial_id}: {trial.status} in {seconds:.0f} s"
    if str(trial.status) == "COMPLETED" and objective in result.get("metrics", {}):
        values = ", ".join(
            f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
            for k, v in result["values"].items()
        )
        return f"{head}, {objective} {result['metrics'][objective]:.4f} ({values})"
    lines = (trial.message or "").strip().splitlines()
    return f"{head}: {result.get('error') or (lines[-1] if lines else '')}"


# ------------------------------------------------------------------------------------------ a search
# The least each tuning setting allows (worker_timeout_s: more than 0).
def check_search(cfg) -> float | None:
    """Check every value of the search that can be checked before it runs, each bad one a one-line
    error naming its key: the tuning settings, the objective and the space. Returns the time
    budget in seconds (None: no limit)."""
    tcfg = cfg.tuning
    # every key's range (TuningConfig.LIMITS for the search's own), as for training
    check_config(cfg)
    # whether the recipe logs it shows only after a trial
    if not (tcfg.objective or cfg.train.monitor):
        raise UserError(
            "tuning.objective: empty, and so is train.monitor; name the metric to optimise"
        )
    # a few-shot sample holds nothing out (recipes.common.labels.read_class_splits)
    if getattr(cfg.data, "examples_per_class", 0) and not getattr(cfg.data, "validation", ""):
        raise UserError(
            "data.validation: a search scores its trials on validation data, and nothing is held "
            "out of a data.examples_per_class sample; give data.validation"
        )
    build_hyperparameters(tcfg.space, type(cfg))
    return parse_duration(tcfg.max_time, "tuning.max_time")


def plan_search(
    recipe: str, cfg, directory: str | Path | None, resume: bool, role: str
) -> tuple[SearchDir, Any]:
    """`(search, cfg)`: the search directory, and the config the search runs (its own saved config
    when resuming or joining as a worker). Writes nothing."""
    name = cfg.run.name or time.strftime("search-%Y%m%d-%H%M%S")
    path = (
        Path(directory) if directory else Path(cfg.run.runs_dir) / recipe.rsplit(".", 1)[-1] / name
    )
    search = SearchDir(path)
    if role == "worker":  # the chief creates the search; a worker runs what it finds there
        deadline = time.time() + 600
        while not search.config.exists():
            if time.time() > deadline:
                raise UserError(
                    f"{search.config}: no search to join after 10 minutes; start the chief first"
                )
            time.sleep(1)
        # a complete config: its class reads it back
        return search, load_config(type(cfg), search.config)
    if resume:
        if not search.config.exists():
            raise UserError(
                f"{path}: nothing to resume (no search.yaml); start it without --resume"
            )
        return search, with_values(
            load_config(type(cfg), search.config),
            {"tuning.max_time": cfg.tuning.max_time},
            "--max-time",
        )
    return search, cfg


def create_search(search: SearchDir, cfg, overwrite: bool) -> None:
    """Make the directory of a new search, holding its config."""
    path = search.path
    if path.exists() and any(path.iterdir()):
        # Only a search is ever deleted: not a training run of the same name, not any other folder.
        if not search.config.is_file() or is_run(path):
            raise UserError(
                f"{path}: exists and is not a keras-zoo search; refusing to replace it (choose another "
                "--name or --dir)"
            )
        if not overwrite:
            raise UserError(
                f"{path}: search directory exists; pass --overwrite to replace it or --resume to continue it"
            )
        shutil.rmtree(path)
    path.mkdir(parents=True, exist_ok=True)
    save_config(cfg, search.config)


def tune(
    recipe: str,
    cfg,
    directory: str | Path | None = None,
    resume: bool = False,
    overwrite: bool = False,
    role: str = "single",
    host: str | None = None,
    port: int | None = None,
    workers: int = 0,
    verbose: int = 0,
) -> SearchResult | None:
    """Search `cfg.tuning.space` for the recipe. `role`: single (this process runs the trials),
    chief (serves the oracle to workers) or worker (runs the chief's trials); `workers` > 0 starts
    a chief here with that many local workers. Returns the ranked results (None on a worker)."""
    if role != "single" and not (directory or cfg.run.name):
        raise UserError(
            f"--role {role}: name the shared search directory (--dir or --name), the same on every host"
        )
    if workers:
        role = "chief"
        port = port or free_port(host or "127.0.0.1")
    search, cfg = plan_search(recipe, cfg, directory, resume, role)
    # before anything is written: a bad value must not leave a directory behind
    budget = check_search(cfg)
    if role == "worker":
        distributed.set_role(role, host, port)
        tuner = make_tuner(recipe, cfg, search, verbose)
        with distributed.heartbeat(search, tuner.tuner_id), _search_errors():
            tuner.search()
        return None
    # The chief (or single process) holds the search's lock for its life: `keras-zoo runs` shows
    # it running, `--delete` and a second `tune` of the same search are refused.
    with hold_lock(search.path, f"{search.path}: another command is running this search right now"):
        if not resume:
            create_search(search, cfg, overwrite)
        if role != "single":
            distributed.set_role(role, host, port)
        tuner = make_tuner(recipe, cfg, search, verbose)
        tuner.oracle.deadline = None if budget is None else time.time() + budget
        results.write_experiment(search, tuner.oracle, cfg)
        with distributed.local_workers(recipe, search, workers), _search_errors():
            tuner.search()
        result = results.write_results(search, tuner.oracle, cfg)
        finished = sum(t["status"] in ("COMPLETED", "FAILED") for t in result.trials)
        if (
            budget is not None
            and time.time() >= tuner.oracle.deadline
            and finished < cfg.tuning.max_trials
        ):
            result.stopped_by = (
                f"the time limit (tuning.max_time={cfg.tuning.max_time}) stopped the search after "
                f"{finished} of {cfg.tuning.max_trials} trials; --resume with a longer --max-time "
                "runs the rest"
            )
        return result


@contextlib.contextmanager
def _search_errors():
    """Keras Tuner's ways of stopping a search, as one-line user errors."""
    import keras_tuner

    try:
        yield
    except keras_tuner.errors.FatalError as e:
        raise UserError(str(e)) from None
    except RuntimeError as e:
        if "consecutive failures" not in str(e):
            raise
        lines = str(e).strip().splitlines()
        raise UserError(
            f"the search stopped: {lines[0]} The last error: {lines[-1] if len(lines) > 1 else '?'}"
        ) from None
