"""One trial: the recipe trained with the trial's values, in this process or its own.

`run_trial` is a trial as the search runs it; `train_trial` is one training run of it, and the only
place `tuning` calls into the recipes. By default each run is a fresh process,
`python -m tuning.trial <recipe> <config.yaml> [--resume]` (tuning.trial_process: subprocess), so
whatever training leaves in memory goes when the process ends. Exit status 2 is a one-line user
error.
"""

from __future__ import annotations

import argparse
import gc
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import keras
import keras_tuner

from recipes import engine
from recipes.engine.config import flat_values, save_config, with_values
from recipes.engine.launch import die_with_parent
from recipes.engine.lifecycle import final_metrics, log_hparams_session, session_name
from recipes.engine.registry import load_recipe
from recipes.engine.run_dir import RunDir, is_run, run_status, write_json
from recipes.engine.run_files import read_if_present
from tuning.common import SearchDir, objective_of
from tuning.space import config_values, trial_config
from zoo.errors import UserError
from zoo.runtime import prepare_command_process


def train_trial(recipe: str, cfg: Any, resume: bool, verbose: int | str) -> None:
    """Train `cfg` (a recipe config, or the path of its YAML file) with `recipe`, writing no export:
    one run of a trial. Continues the run in `cfg.run.dir` when `resume`, else starts it afresh."""

    recipe_object = load_recipe(recipe)
    if isinstance(cfg, (str, Path)):  # the trial process gets the config as a file
        cfg = recipe_object.load_config(cfg)
    engine.train(
        recipe_object,
        cfg,
        overwrite=not resume,
        resume=resume,
        verbose=verbose,
        export=False,
        origin=f"a trial of a keras-zoo tune search (this run is {cfg.run.dir}; the search's search.yaml "
        "and this run's config.yaml reproduce it)",
    )


def run_trial(
    recipe: str, cfg, search: SearchDir, trial_id: str, hp_values: dict[str, Any], verbose: int = 0
) -> dict:
    """Train the trial's config (`executions_per_trial` runs, seeds seed, seed+1, ...) and return its
    metrics, averaged over the runs. A trial finished before an interruption is not trained again;
    an interrupted run continues from its last epoch."""

    trial_dir = search.trial(trial_id)
    result_file = trial_dir / "result.json"
    done = read_if_present(result_file)
    if done.get("status") == "COMPLETED" and isinstance(done.get("metrics"), dict):
        return done["metrics"]
    trial_dir.mkdir(parents=True, exist_ok=True)
    trial_cfg = trial_config(cfg, hp_values, trial_id)
    # Named as TensorBoard names it when it serves the runs directory (or the search's parent)
    runs_dir = Path(cfg.run.runs_dir)
    root = (
        runs_dir if search.path.resolve().is_relative_to(runs_dir.resolve()) else search.path.parent
    )
    session = dict(
        logdir=trial_dir, hparams=flat_values(trial_cfg), session_id=session_name(trial_dir, root)
    )
    result = {
        "trial_id": trial_id,
        "values": config_values(hp_values),
        "started_at": time.time(),
        "tuner_id": os.environ.get("KERASTUNER_TUNER_ID", "tuner0"),
    }
    try:
        runs = []
        for k in range(cfg.tuning.executions_per_trial):
            run_dir = trial_dir / f"run{k}"
            run_cfg = with_values(
                trial_cfg,
                {
                    "train.seed": trial_cfg.train.seed + k,
                    "run.dir": str(run_dir),
                    "run.hparams": False,
                },
                source=f"trial {trial_id}",
            )
            state = run_status(run_dir)["status"] if is_run(run_dir) else None
            # continue an interrupted run
            resume = state is not None and (run_dir / "config.yaml").exists()
            if state == "finished":  # an execution finished before an interruption: keep it
                pass
            elif cfg.tuning.trial_process == "subprocess":
                result["trial_peak_rss_gib"] = _train_in_subprocess(
                    recipe, run_cfg, resume, trial_dir / "trial.log"
                )
            else:
                _train_in_process(recipe, run_cfg, resume, verbose)
            runs.append(final_metrics(RunDir(run_dir), trial_cfg.train.monitor))
        metrics = {
            k: sum(r[k] for r in runs) / len(runs) for k in runs[0] if all(k in r for r in runs)
        }
        objective, _ = objective_of(cfg)
        if objective not in metrics:
            raise keras_tuner.errors.FatalError(
                f"tuning.objective: '{objective}' is not a metric of the {recipe} recipe; "
                f"its metrics: {', '.join(sorted(metrics))}"
            )
    except Exception as e:
        log_hparams_session(metrics={}, **session)  # failed trials appear in the dashboard too
        write_json(
            result_file,
            {
                **result,
                "status": "FAILED",
                "error": _one_line(e),
                "duration_s": time.time() - result["started_at"],
            },
        )
        raise
    log_hparams_session(metrics=metrics, **session)
    write_json(
        result_file,
        {
            **result,
            "status": "COMPLETED",
            "metrics": metrics,
            "finished_at": time.time(),
            "duration_s": time.time() - result["started_at"],
            "search_rss_gib": _rss_gib(),
        },
    )
    return metrics


def _train_in_process(recipe: str, cfg, resume: bool, verbose: int) -> None:

    try:
        train_trial(recipe, cfg, resume, verbose)
    except UserError as e:
        raise keras_tuner.errors.FailedTrialError(str(e)) from None
    finally:  # what a trial built must not stay in memory for the next one
        keras.backend.clear_session(free_memory=True)
        gc.collect()


def _train_in_subprocess(recipe: str, cfg, resume: bool, log: Path) -> float:
    """Train in a fresh process (`python -m tuning.trial`), its output appended to `log`; returns
    its peak resident memory in GiB. A clean error fails the trial; a crash (a signal, say) leaves
    it to the retry policy."""

    config = log.parent / f"{Path(cfg.run.dir).name}.yaml"
    save_config(cfg, config)
    command = [sys.executable, "-m", "tuning.trial", recipe, str(config)] + (
        ["--resume"] if resume else []
    )
    with log.open("a") as out:
        out.write(f"\n$ {' '.join(command)}\n")
        out.flush()
        process = subprocess.Popen(
            command, stdout=out, stderr=subprocess.STDOUT, preexec_fn=die_with_parent
        )
        _, status, usage = os.wait4(process.pid, 0)
    code = os.waitstatus_to_exitcode(status)
    if code == 2:  # keras-zoo's one-line user error
        raise keras_tuner.errors.FailedTrialError(_last_line(log))
    if code != 0:
        raise RuntimeError(f"trial process exited with {code}: {_last_line(log)} (see {log})")
    return usage.ru_maxrss / 2**20


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


# ------------------------------------------------------------------------- the trial process
def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tuning.trial", description="One trial run in its own process."
    )
    parser.add_argument("recipe")
    parser.add_argument("config")
    parser.add_argument("--resume", action="store_true")
    args = parser.parse_args(argv)

    prepare_command_process()  # CPU settings before TensorFlow loads; the trial's log without harmless native lines
    try:
        train_trial(args.recipe, Path(args.config), args.resume, verbose=2)
    except UserError as e:
        print(f"keras-zoo: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
