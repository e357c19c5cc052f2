"""Hyperparameter search over a recipe's config, with Keras Tuner.

A trial is an ordinary training run of the recipe (`recipe.train`) with the trial's values set in
its config: a search never trains any other way. By default each trial runs in a fresh Python
process, so nothing a trial leaves in memory reaches the next one.

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
import gc
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from recipes.config import flat_values, save_config, with_values
from tuning.space import build_hyperparameters, config_values, parse_duration, trial_config
from zoo.errors import UserError

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


def objective_of(cfg) -> tuple[str, str]:
    """`(metric, direction)` the search optimises: `tuning.objective` (default: the recipe's monitor)."""
    from recipes.engine import monitor_mode  # noqa: PLC0415

    name = cfg.tuning.objective or cfg.train.monitor
    direction = cfg.tuning.direction if cfg.tuning.direction != "auto" else monitor_mode(name)
    return name, direction


# -------------------------------------------------------------------------------------- one trial
def run_trial(recipe: str, cfg, search: SearchDir, trial_id: str, hp_values: dict[str, Any], verbose: int = 0) -> dict:
    """Train the trial's config (`executions_per_trial` runs, seeds seed, seed+1, ...) and return its
    metrics, averaged over the runs. A trial finished before an interruption is not trained again;
    an interrupted run continues from its last epoch."""
    from recipes.engine import final_metrics, log_hparams_session  # noqa: PLC0415
    from recipes.run_dir import RunDir  # noqa: PLC0415

    trial_dir = search.trial(trial_id)
    result_file = trial_dir / "result.json"
    if result_file.exists():
        done = json.loads(result_file.read_text())
        if done["status"] == "COMPLETED":
            return done["metrics"]
    trial_dir.mkdir(parents=True, exist_ok=True)
    trial_cfg = trial_config(cfg, hp_values, trial_id)
    session = dict(logdir=trial_dir, hparams=flat_values(trial_cfg), session_id=str(trial_dir.resolve()))
    result = {"trial_id": trial_id, "values": config_values(hp_values), "started_at": time.time(),
              "tuner_id": os.environ.get("KERASTUNER_TUNER_ID", "tuner0")}
    try:
        runs = []
        for k in range(cfg.tuning.executions_per_trial):
            run_dir = trial_dir / f"run{k}"
            run_cfg = with_values(trial_cfg, {"train.seed": trial_cfg.train.seed + k, "run.dir": str(run_dir),
                                              "run.hparams": False}, source=f"trial {trial_id}")
            resume = (run_dir / "config.yaml").exists()
            if cfg.tuning.trial_process == "subprocess":
                result["trial_peak_rss_gib"] = _train_in_subprocess(recipe, run_cfg, resume, trial_dir / "trial.log")
            else:
                _train_in_process(recipe, run_cfg, resume, verbose)
            runs.append(final_metrics(RunDir(run_dir), trial_cfg.train.monitor))
        metrics = {k: sum(r[k] for r in runs) / len(runs) for k in runs[0] if all(k in r for r in runs)}
        objective, _ = objective_of(cfg)
        if objective not in metrics:
            import keras_tuner  # noqa: PLC0415

            raise keras_tuner.errors.FatalError(
                f"tuning.objective: '{objective}' is not a metric of the {recipe} recipe; "
                f"its metrics: {', '.join(sorted(metrics))}")
    except Exception as e:
        log_hparams_session(metrics={}, **session)  # failed trials appear in the dashboard too
        _write_json(result_file, {**result, "status": "FAILED", "error": _one_line(e),
                                  "duration_s": time.time() - result["started_at"]})
        raise
    log_hparams_session(metrics=metrics, **session)
    _write_json(result_file, {**result, "status": "COMPLETED", "metrics": metrics, "finished_at": time.time(),
                              "duration_s": time.time() - result["started_at"], "search_rss_gib": _rss_gib()})
    return metrics


def _train_in_process(recipe: str, cfg, resume: bool, verbose: int) -> None:
    import keras  # noqa: PLC0415
    import keras_tuner  # noqa: PLC0415

    from recipes.cli import load_recipe  # noqa: PLC0415

    try:
        load_recipe(recipe).train(cfg, overwrite=not resume, resume=resume, verbose=verbose,
                                                       export=False)
    except UserError as e:
        raise keras_tuner.errors.FailedTrialError(str(e)) from None
    finally:  # what a trial built must not stay in memory for the next one
        keras.backend.clear_session(free_memory=True)
        gc.collect()


def _train_in_subprocess(recipe: str, cfg, resume: bool, log: Path) -> float:
    """Train in a fresh process (`python -m tuning.trial`), its output appended to `log`; returns
    its peak resident memory in GiB. A clean error fails the trial; a crash (a signal, say) leaves
    it to the retry policy."""
    import keras_tuner  # noqa: PLC0415

    config = log.parent / f"{Path(cfg.run.dir).name}.yaml"
    save_config(cfg, config)
    command = [sys.executable, "-m", "tuning.trial", recipe, str(config)] + (["--resume"] if resume else [])
    with log.open("a") as out:
        out.write(f"\n$ {' '.join(command)}\n")
        out.flush()
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, preexec_fn=die_with_parent)
        _, status, usage = os.wait4(process.pid, 0)
    code = os.waitstatus_to_exitcode(status)
    if code == 2:  # keras-zoo's one-line user error
        raise keras_tuner.errors.FailedTrialError(_last_line(log))
    if code != 0:
        raise RuntimeError(f"trial process exited with {code}: {_last_line(log)} (see {log})")
    return usage.ru_maxrss / 2**20


def die_with_parent() -> None:
    """In a child process: be killed when the parent dies (Linux), so that a killed search or
    worker leaves no orphan training on."""
    try:
        import ctypes  # noqa: PLC0415
        import signal  # noqa: PLC0415

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def _last_line(path: Path) -> str:
    lines = [line for line in path.read_text(errors="replace").splitlines() if line.strip()]
    return lines[-1].strip() if lines else "(no output)"


def _one_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[-1] if text else ''}"


def _rss_gib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 2**20
    return float("nan")


def _write_json(path: Path, data: dict) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=float) + "\n")
    tmp.replace(path)


# ---------------------------------------------------------------------------------------- the tuner
def make_tuner(recipe: str, cfg, search: SearchDir, verbose: int = 0):
    """A Keras Tuner tuner whose trials are runs of `recipe` (see `run_trial`)."""
    import keras_tuner  # noqa: PLC0415
    from keras_tuner.engine.base_tuner import BaseTuner  # noqa: PLC0415
    from keras_tuner.engine.trial import TrialStatus  # noqa: PLC0415

    from tuning import distributed  # noqa: PLC0415
    from tuning.oracles import make_oracle  # noqa: PLC0415

    tcfg = cfg.tuning
    objective, direction = objective_of(cfg)
    oracle = make_oracle(tcfg.algorithm, keras_tuner.Objective(objective, direction),
                         build_hyperparameters(tcfg.space, type(cfg)), tcfg.max_trials, tcfg.seed,
                         tcfg.max_retries_per_trial, tcfg.hyperband_max_epochs or cfg.train.epochs,
                         tcfg.hyperband_factor)

    class RecipeTuner(BaseTuner):
        def run_trial(self, trial, *args, **kwargs) -> dict:
            return run_trial(recipe, cfg, search, trial.trial_id, trial.hyperparameters.values, verbose)

        def search(self, *args, **kwargs) -> None:
            if distributed.is_chief():
                self.save()
                distributed.serve(self.oracle, search, tcfg.worker_timeout_s)
                return
            self.on_search_begin()
            while True:
                trial = self.oracle.create_trial(self.tuner_id)
                if trial.status == TrialStatus.STOPPED:
                    break
                if trial.status == TrialStatus.IDLE:  # the oracle waits for running trials
                    time.sleep(1.0)
                    continue
                self.on_trial_begin(trial)
                started = time.time()
                self._try_run_and_update_trial(trial)
                print(_progress_line(search, trial, objective, time.time() - started), flush=True)
                self.on_trial_end(trial)
            self.on_search_end()

    tuner = RecipeTuner(oracle=oracle, directory=str(search.path), project_name=TUNER_DIR)
    tuner.oracle.verbose = verbose  # Keras Tuner's per-trial tables; keras-zoo prints its own summary
    return tuner


def _progress_line(search: SearchDir, trial, objective: str, seconds: float) -> str:
    """`trial 3: COMPLETED in 42 s, val_accuracy 0.9123 (train.learning_rate=3e-05, ...)` or the error."""
    file = search.trial(trial.trial_id) / "result.json"
    result = json.loads(file.read_text()) if file.exists() else {}
    head = f"trial {trial.trial_id}: {trial.status} in {seconds:.0f} s"
    if str(trial.status) == "COMPLETED" and objective in result.get("metrics", {}):
        values = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in result["values"].items())
        return f"{head}, {objective} {result['metrics'][objective]:.4f} ({values})"
    lines = (trial.message or "").strip().splitlines()
    return f"{head}: {result.get('error') or (lines[-1] if lines else '')}"


# ------------------------------------------------------------------------------------------ a search
def plan_search(recipe: str, cfg, directory: str | Path | None, resume: bool, overwrite: bool,
                role: str, load_config) -> tuple[SearchDir, Any]:
    """`(search, cfg)`: the search directory, ready; the config the search runs (its own saved
    config when resuming or joining as a worker)."""
    name = cfg.run.name or time.strftime("search-%Y%m%d-%H%M%S")
    path = Path(directory) if directory else Path(cfg.run.runs_dir) / recipe.rsplit(".", 1)[-1] / name
    search = SearchDir(path)
    if role == "worker":  # the chief creates the search; a worker runs what it finds there
        deadline = time.time() + 600
        while not search.config.exists():
            if time.time() > deadline:
                raise UserError(f"{search.config}: no search to join after 10 minutes; start the chief first")
            time.sleep(1)
        return search, load_config(search.config)
    if resume:
        if not search.config.exists():
            raise UserError(f"{path}: nothing to resume (no search.yaml); start it without --resume")
        return search, with_values(load_config(search.config), {"tuning.max_time": cfg.tuning.max_time}, "--max-time")
    if path.exists() and any(path.iterdir()):
        if not overwrite:
            raise UserError(f"{path}: search directory exists; pass --overwrite to replace it or --resume to continue it")
        shutil.rmtree(path)
    build_hyperparameters(cfg.tuning.space, type(cfg))  # a bad space fails before anything is written
    path.mkdir(parents=True, exist_ok=True)
    save_config(cfg, search.config)
    return search, cfg


def tune(recipe: str, cfg, directory: str | Path | None = None, resume: bool = False, overwrite: bool = False,
         role: str = "single", host: str | None = None, port: int | None = None, workers: int = 0,
         verbose: int = 0) -> SearchResult | None:
    """Search `cfg.tuning.space` for the recipe. `role`: single (this process runs the trials),
    chief (serves the oracle to workers) or worker (runs the chief's trials); `workers` > 0 starts
    a chief here with that many local workers. Returns the ranked results (None on a worker)."""
    from recipes.cli import load_recipe  # noqa: PLC0415
    from tuning import distributed, results  # noqa: PLC0415

    module = load_recipe(recipe)
    if role != "single" and not (directory or cfg.run.name):
        raise UserError(f"--role {role}: name the shared search directory (--dir or --name), the same on every host")
    if workers:
        role = "chief"
        from tuning.distributed import free_port  # noqa: PLC0415

        port = port or free_port(host or "127.0.0.1")
    search, cfg = plan_search(recipe, cfg, directory, resume, overwrite, role, module.load_config)
    if role != "single":
        distributed.set_role(role, host, port)
    budget = parse_duration(cfg.tuning.max_time)  # a bad value fails before any trial runs
    tuner = make_tuner(recipe, cfg, search, verbose)
    if role == "worker":
        with distributed.heartbeat(search, tuner.tuner_id), _search_errors():
            tuner.search()
        return None
    tuner.oracle.deadline = None if budget is None else time.time() + budget
    results.write_experiment(search, tuner.oracle, cfg)
    with distributed.local_workers(recipe, search, workers), _search_errors():
        tuner.search()
    return results.write_results(search, tuner.oracle, cfg)


@contextlib.contextmanager
def _search_errors():
    """Keras Tuner's ways of stopping a search, as one-line user errors."""
    import keras_tuner  # noqa: PLC0415

    try:
        yield
    except keras_tuner.errors.FatalError as e:
        raise UserError(str(e)) from None
    except RuntimeError as e:
        if "consecutive failures" not in str(e):
            raise
        lines = str(e).strip().splitlines()
        raise UserError(f"the search stopped: {lines[0]} The last error: {lines[-1] if len(lines) > 1 else '?'}") from None
