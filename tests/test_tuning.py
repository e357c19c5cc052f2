"""Hyperparameter search: spaces, results, best config, resume after SIGKILL, chief/worker, HParams.

The mechanics run on `tests/toy_recipe.py` (a recipe that trains through the engine in a second
or two), so searches of many trials, kills and worker processes fit in the suite's time. The real
recipes' default spaces are checked here; the sentiment recipe is searched in the notebook test.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.conftest import ROOT
from tests.tensorboard_server import hparams_experiment, hparams_sessions, serve_tensorboard
from zoo.errors import UserError

TOY = "tests.toy_recipe"
IN_PROCESS = ["tuning.trial_process=in_process"]
IN_PROCESS_FLAGS = ["--set", "tuning.trial_process=in_process"]


def toy_config(*overrides: str):
    from tests import toy_recipe

    return toy_recipe.RECIPE.load_config(overrides=[*IN_PROCESS, *overrides])


def start_search(*args: str, log: Path) -> subprocess.Popen:
    """`keras-zoo tune ARGS` in its own process group, output to `log`."""
    with log.open("a") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "keras_zoo_cli", "tune", *args],
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
        )


def wait_for(condition, timeout: float, what: str, log: Path | None = None) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(
                f"timed out waiting for {what}" + (f"\n{log.read_text()[-3000:]}" if log else "")
            )
        time.sleep(0.2)


def results(search: Path) -> dict:
    return json.loads((search / "results.json").read_text())


def history_rows(run: Path) -> int:
    path = run / "history.csv"
    return len(list(csv.DictReader(path.open()))) if path.exists() else 0


# ----------------------------------------------------------------------------------------- spaces
def test_space_types_follow_the_config_keys():
    from recipes import sentiment
    from tuning.space import build_hyperparameters

    hp = build_hyperparameters(
        {
            "train.learning_rate": {"min": "1e-5", "max": 1e-3, "sampling": "log"},
            "train": {"epochs": {"min": 1, "max": 4}, "batch_size": [16, 32]},
            "model.freeze_embeddings": "boolean",
            "model.pooling": {"fixed": "cls"},
            "train.warmup_ratio": {"min": 0, "max": 0.2, "step": 0.1},
        },
        sentiment.SentimentConfig,
    )
    kinds = {p.name: type(p).__name__ for p in hp.space}
    assert kinds == {
        "train.learning_rate": "Float",
        "train.epochs": "Int",
        "train.batch_size": "Choice",
        "model.freeze_embeddings": "Boolean",
        "model.pooling": "Fixed",
        "train.warmup_ratio": "Float",
    }
    lr = next(p for p in hp.space if p.name == "train.learning_rate")
    assert (lr.min_value, lr.max_value, lr.sampling) == (1e-5, 1e-3, "log")


@pytest.mark.parametrize(
    "space, message",
    [
        (
            {"train.learnig_rate": [1e-4]},
            "unknown config key 'train.learnig_rate' (did you mean 'train.learning_rate'?)",
        ),
        ({"train.epochs": {"min": 1.5, "max": 3}}, "train.epochs: the key is an integer"),
        (
            {"model.pooling": ["mean", "max"]},
            "'max' is not a valid value for this one of mean, cls key",
        ),
        (
            {"train.learning_rate": {"min": 0, "max": 1e-3, "sampling": "log"}},
            "log sampling needs min > 0",
        ),
        (
            {"train.learning_rate": {"min": 1e-3, "max": 1e-4}},
            "min (0.001) must be below max (0.0001)",
        ),
        ({"model.pooling": {"min": 1, "max": 2}}, "a range needs a number key"),
        ({"train.batch_size": "boolean"}, "'boolean' needs a true/false key"),
        ({"run.name": ["a", "b"]}, "run and tuning settings are not hyperparameters"),
        (
            {"train.epochs": {"min": 1, "maximum": 3}},
            "train.epochs: expected [choices], {min, max, sampling, step}",
        ),
        ({"train.epochs": {"low": 1}}, "'train.epochs.low': 'train.epochs' is not a section"),
        ({}, "the search space is empty"),
    ],
)
def test_a_bad_space_is_one_error_naming_the_key(space, message):
    from recipes import sentiment
    from tuning.space import build_hyperparameters

    with pytest.raises(UserError, match=None) as error:
        build_hyperparameters(space, sentiment.SentimentConfig)
    assert message in str(error.value) and "\n" not in str(error.value)


def test_every_recipe_ships_a_valid_default_space():
    from recipes import image_classification, ner, sentiment
    from tuning.space import build_hyperparameters

    for recipe in (sentiment.RECIPE, image_classification.RECIPE, ner.RECIPE):
        cfg = recipe.load_config()
        assert len(build_hyperparameters(cfg.tuning.space, type(cfg)).space) >= 5, recipe.name
        assert cfg.tuning.objective in ("val_accuracy", "val_entity_f1")


def test_setting_one_tuning_key_keeps_the_recipes_default_space():
    from recipes import ner

    cfg = ner.RECIPE.load_config(overrides=["tuning.max_trials=3"])
    assert (
        cfg.tuning.max_trials == 3
        and cfg.tuning.objective == "val_entity_f1"
        and "train.learning_rate" in cfg.tuning.space
    )


def test_durations():
    from tuning.space import parse_duration

    assert [parse_duration(t) for t in ("45s", "90m", "2h", "1h30m", "120", "")] == [
        45,
        5400,
        7200,
        5400,
        120,
        None,
    ]
    with pytest.raises(
        UserError, match="tuning.max_time: 'two hours' is not a duration; expected e.g. 45s"
    ):
        parse_duration("two hours")


# ------------------------------------------------------------------------------- a search, in-process
@pytest.fixture(scope="module")
def toy_search(tmp_path_factory):
    """A 5-trial grid search in this process; the 4-unit trials fail on purpose."""
    from tuning import tune

    search = tmp_path_factory.mktemp("toy") / "search"
    cfg = toy_config(
        "tuning.algorithm=grid",
        "tuning.max_trials=6",
        "model.fail_on_units=4",
        "tuning.space={train.learning_rate: [0.003, 0.1], model.units: [4, 8, 16]}",
    )
    return tune(TOY, cfg, search)


def test_results_rank_trials_and_record_failures(toy_search):
    search = toy_search.search.path
    trials = results(search)["trials"]
    assert len(trials) == 6 and sorted(t["trial_id"] for t in trials) == [str(i) for i in range(6)]
    completed = [t for t in trials if t["status"] == "COMPLETED"]
    failed = [t for t in trials if t["status"] == "FAILED"]
    assert [t["hyperparameters"]["model.units"] for t in failed] == [4, 4]
    assert all("4 units is the failing value" in t["error"] for t in failed)
    objectives = [t["objective"] for t in completed]
    assert objectives == sorted(objectives, reverse=True) and [t["rank"] for t in completed] == [
        1,
        2,
        3,
        4,
    ]
    grid = {
        (t["hyperparameters"]["train.learning_rate"], t["hyperparameters"]["model.units"])
        for t in trials
    }
    assert len(grid) == 6  # every grid point once
    for t in completed:  # the table's metrics are the trial run's own
        run = search / "trials" / f"trial_{t['trial_id']}" / "run0"
        assert t["metrics"]["val_accuracy"] == pytest.approx(
            json.loads((run / "metrics.json").read_text())["validation"]["accuracy"]
        )
    rows = list(csv.DictReader((search / "results.csv").open()))
    assert [r["trial_id"] for r in rows] == [t["trial_id"] for t in trials]
    assert {
        "objective:val_accuracy",
        "train.learning_rate",
        "model.units",
        "val_macro_f1",
        "duration_s",
        "error",
    } <= rows[0].keys()


def test_the_best_config_trains_to_the_reported_objective(toy_search, tmp_path):
    from recipes import engine
    from tests import toy_recipe

    best = yaml.safe_load((toy_search.search.best_config).read_text())
    assert best["model"]["units"] == toy_search.best["hyperparameters"]["model.units"]
    assert best["run"]["dir"] == "" and best["run"]["hparams"] is True
    cfg = toy_recipe.RECIPE.load_config(
        toy_search.search.best_config, [f"run.runs_dir={tmp_path}", "run.name=again"]
    )
    _, report = engine.train(toy_recipe.RECIPE, cfg, verbose=0)
    assert report["validation"]["accuracy"] == pytest.approx(toy_search.best["objective"], abs=1e-6)


def test_the_hparams_dashboard_shows_every_trial_with_named_metrics(toy_search):
    search = toy_search.search.path
    with serve_tensorboard(search, ready=lambda s: len(hparams_sessions(s)) == 6) as server:
        experiment = hparams_experiment(server)
        groups = hparams_sessions(server)
    assert {h["name"] for h in experiment["hparamInfos"]} == {"train.learning_rate", "model.units"}
    metrics = {m["name"]["tag"]: m for m in experiment["metricInfos"]}
    assert metrics["val_accuracy"]["displayName"] == "val_accuracy (objective)"
    assert {"val_loss", "val_macro_f1", "accuracy"} <= metrics.keys()
    by_trial = {Path(g["sessions"][0]["name"]).name: g for g in groups}
    assert sorted(by_trial) == [f"trial_{i}" for i in range(6)] and all(
        len(g["sessions"]) == 1 for g in groups
    )
    # Trial ids are relative names (the search is outside the runs directory: relative to its parent)
    assert sorted(g["name"] for g in groups) == [f"search/trials/trial_{i}" for i in range(6)]
    for t in results(search)["trials"]:
        group = by_trial[f"trial_{t['trial_id']}"]
        assert group["hparams"]["model.units"] == t["hyperparameters"]["model.units"]
        values = {m["name"]["tag"]: m["value"] for m in group.get("metricValues", [])}
        if t["status"] == "COMPLETED":
            assert values["val_accuracy"] == pytest.approx(t["objective"])
        else:
            assert "val_accuracy" not in values


def test_a_train_run_logs_its_hparams_session_the_same_way(toy_search, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.util.tensor_util import make_ndarray

    from recipes import engine
    from tests import toy_recipe

    run, report = engine.train(
        toy_recipe.RECIPE,
        toy_recipe.RECIPE.load_config(overrides=[f"run.dir={tmp_path / 'run'}"]),
        verbose=0,
    )
    events = EventAccumulator(str(run.logs), size_guidance={"tensors": 0}).Reload()
    assert "_hparams_/session_start_info" in events.Tags()["tensors"]
    assert make_ndarray(events.Tensors("val_accuracy")[-1].tensor_proto) == pytest.approx(
        report["validation"]["accuracy"]
    )


def test_an_existing_search_needs_a_flag_and_a_bad_objective_stops_the_search(toy_search, tmp_path):
    from tuning import tune

    with pytest.raises(UserError, match="search directory exists; pass --overwrite"):
        tune(TOY, toy_config(), toy_search.search.path)
    with pytest.raises(UserError, match="--role worker: name the shared search directory"):
        tune(TOY, toy_config(), role="worker")
    with pytest.raises(UserError, match="tuning.objective: 'val_f2' is not a metric of the"):
        tune(TOY, toy_config("tuning.objective=val_f2", "tuning.max_trials=2"), tmp_path / "s")


@pytest.mark.parametrize(
    "key, value, message",
    [
        ("max_time", "abc", "tuning.max_time: 'abc' is not a duration"),
        ("max_trials", 0, "tuning.max_trials: must be at least 1, not 0"),
        ("executions_per_trial", 0, "tuning.executions_per_trial: must be at least 1"),
        ("hyperband_factor", 1, "tuning.hyperband_factor: must be at least 2"),
        ("hyperband_max_epochs", -1, "tuning.hyperband_max_epochs: must be at least 0"),
        ("max_retries_per_trial", -1, "tuning.max_retries_per_trial: must be at least 0"),
        ("worker_timeout_s", 0.0, "tuning.worker_timeout_s: must be more than 0"),
        ("objective", "", "tuning.objective: empty, and so is train.monitor"),
        ("space", {}, "tuning.space: the search space is empty"),
    ],
)
def test_a_bad_tuning_value_is_one_error_before_anything_is_written(
    key, value, message, tmp_path, monkeypatch
):
    from tuning import search, tune

    monkeypatch.setattr(
        search,
        "make_tuner",
        lambda *args, **kwargs: pytest.fail(f"a search with a bad {key} started"),
    )
    cfg = toy_config()
    setattr(cfg.tuning, key, value)  # past the config loader's own checks: tune checks for itself
    if key == "objective":
        cfg.train.monitor = ""
    with pytest.raises(UserError) as error:
        tune(TOY, cfg, tmp_path / "s")
    assert str(error.value).startswith(message) and "\n" not in str(error.value)
    assert not (tmp_path / "s").exists()


def test_a_bad_max_time_leaves_nothing_and_the_corrected_rerun_runs(tmp_path):
    search, log = tmp_path / "s", tmp_path / "tune.log"
    args = [
        TOY,
        "--dir",
        str(search),
        "--set",
        "tuning.algorithm=random",
        "--set",
        "tuning.max_trials=1",
        *IN_PROCESS_FLAGS,
    ]
    assert start_search(*args, "--max-time", "abc", log=log).wait(timeout=120) == 2
    assert "tuning.max_time: 'abc' is not a duration" in log.read_text()
    assert not search.exists()
    assert start_search(*args, "--max-time", "10m", log=log).wait(timeout=300) == 0, (
        log.read_text()[-3000:]
    )
    assert [t["status"] for t in results(search)["trials"]] == ["COMPLETED"]
    assert yaml.safe_load((search / "search.yaml").read_text())["tuning"]["max_time"] == "10m"


def test_resume_with_a_bad_max_time_changes_nothing(toy_search):
    from tuning import tune

    search = toy_search.search.path
    before = {p: p.stat().st_mtime_ns for p in search.rglob("*")}
    with pytest.raises(UserError, match="tuning.max_time: 'soon' is not a duration"):
        tune(TOY, toy_config("tuning.max_time=soon"), search, resume=True)
    assert {p: p.stat().st_mtime_ns for p in search.rglob("*")} == before


def test_executions_per_trial_average_runs_with_successive_seeds(tmp_path):
    from tuning import tune

    result = tune(
        TOY,
        toy_config(
            "tuning.algorithm=random",
            "tuning.max_trials=1",
            "tuning.executions_per_trial=2",
            "train.seed=7",
        ),
        tmp_path / "s",
    )
    trial_dir = result.search.trial(result.trials[0]["trial_id"])
    runs = [yaml.safe_load((trial_dir / f"run{k}" / "config.yaml").read_text()) for k in (0, 1)]
    assert [r["train"]["seed"] for r in runs] == [7, 8]
    accuracies = [
        json.loads((trial_dir / f"run{k}" / "metrics.json").read_text())["validation"]["accuracy"]
        for k in (0, 1)
    ]
    assert result.trials[0]["objective"] == pytest.approx(sum(accuracies) / 2)


def test_the_time_budget_stops_between_trials(tmp_path):
    from tuning import tune

    result = tune(
        TOY,
        toy_config("tuning.algorithm=random", "tuning.max_trials=50", "tuning.max_time=1s"),
        tmp_path / "s",
    )
    assert 1 <= len(result.trials) < 50 and all(t["status"] == "COMPLETED" for t in result.trials)


# ------------------------------------------------------------------------------- resume after SIGKILL
SLOW_TRIALS = [
    "--set",
    "run.seconds_per_epoch=0.7",
    "--set",
    "train.epochs=3",
    "--set",
    "tuning.max_trials=4",
    "--set",
    "tuning.trial_process=in_process",
]
SPACES = {
    "random": "{train.learning_rate: {min: 0.001, max: 0.1, sampling: log}, model.units: [4, 8, 16]}",
    "bayesian": "{train.learning_rate: {min: 0.001, max: 0.1, sampling: log}, model.units: [4, 8, 16]}",
    "hyperband": "{train.learning_rate: {min: 0.001, max: 0.1, sampling: log}, model.units: [4, 8, 16]}",
    "grid": "{train.learning_rate: [0.003, 0.1], model.units: [4, 8]}",
}


def test_a_search_killed_mid_trial_resumes_without_rerunning_finished_trials(tmp_path):
    """For each algorithm: SIGKILL once trial 2 has started training, resume, and check that
    trials 0-1 were kept as they were and the search ends with exactly 4 trials."""
    searches = {algo: tmp_path / algo for algo in SPACES}
    args = {
        algo: [
            TOY,
            "--dir",
            str(path),
            "--set",
            f"tuning.algorithm={algo}",
            "--set",
            f"tuning.space={SPACES[algo]}",
            "--set",
            "tuning.hyperband_max_epochs=3",
            *SLOW_TRIALS,
        ]
        for algo, path in searches.items()
    }
    logs = {algo: tmp_path / f"{algo}.log" for algo in SPACES}
    processes = {algo: start_search(*args[algo], log=logs[algo]) for algo in SPACES}
    kept, deadline = {}, time.monotonic() + 240
    while len(kept) < len(searches):  # all four run at once; kill each once its trial 2 has started
        assert time.monotonic() < deadline, {
            algo: logs[algo].read_text()[-2000:] for algo in searches if algo not in kept
        }
        for algo, path in searches.items():
            if algo not in kept and (path / "trials" / "trial_2" / "run0" / "config.yaml").exists():
                os.killpg(processes[algo].pid, signal.SIGKILL)
                processes[algo].wait()
                # killed mid-trial
                assert not (path / "trials" / "trial_2" / "result.json").exists(), algo
                kept[algo] = {
                    t: (path / "trials" / f"trial_{t}" / "result.json").read_text()
                    for t in ("0", "1")
                }
        time.sleep(0.05)
    resumed = {algo: start_search(*args[algo], "--resume", log=logs[algo]) for algo in SPACES}
    for algo, path in searches.items():
        assert resumed[algo].wait(timeout=300) == 0, logs[algo].read_text()[-3000:]
        trials = results(path)["trials"]
        assert sorted(t["trial_id"] for t in trials) == ["0", "1", "2", "3"], algo
        assert all(t["status"] == "COMPLETED" for t in trials), (algo, trials)
        for t, text in kept[algo].items():  # finished trials untouched: not run again
            assert (path / "trials" / f"trial_{t}" / "result.json").read_text() == text, algo
        # the killed trial continued from its last epoch rather than logging its epochs twice
        trial2 = next(t for t in trials if t["trial_id"] == "2")
        assert history_rows(path / "trials" / "trial_2" / "run0") == trial2["hyperparameters"].get(
            "train.epochs", 3
        ), algo
    grid = results(searches["grid"])["trials"]
    # the whole grid, once each
    assert len({tuple(sorted(t["hyperparameters"].items())) for t in grid}) == 4


# -------------------------------------------------------------------------------------- distributed
def test_a_chief_and_two_workers_run_every_trial_exactly_once(tmp_path):
    search, log = tmp_path / "search", tmp_path / "tune.log"
    process = start_search(
        TOY,
        "--workers",
        "2",
        "--dir",
        str(search),
        "--set",
        "tuning.algorithm=random",
        "--set",
        "tuning.max_trials=6",
        *IN_PROCESS_FLAGS,
        log=log,
    )
    assert process.wait(timeout=300) == 0, log.read_text()[-3000:]
    trials = results(search)["trials"]
    assert sorted(t["trial_id"] for t in trials) == [str(i) for i in range(6)]
    assert all(t["status"] == "COMPLETED" for t in trials)
    ran_by = [
        json.loads((search / "trials" / f"trial_{t['trial_id']}" / "result.json").read_text())[
            "tuner_id"
        ]
        for t in trials
    ]
    assert set(ran_by) <= {"worker0", "worker1"}
    for t in trials:  # each trial trained once: one run, its epochs logged once
        trial_dir = search / "trials" / f"trial_{t['trial_id']}"
        assert sorted(p.name for p in trial_dir.iterdir() if p.is_dir()) == ["run0"]
        assert history_rows(trial_dir / "run0") == 3


def test_a_worker_killed_mid_trial_does_not_hang_the_search(tmp_path):
    from recipes.engine.launch import free_port

    search, port = tmp_path / "search", str(free_port())
    common = [
        TOY,
        "--dir",
        str(search),
        "--port",
        port,
        "--set",
        "tuning.algorithm=random",
        "--set",
        "tuning.max_trials=4",
        "--set",
        "tuning.worker_timeout_s=4",
        "--set",
        "tuning.max_retries_per_trial=1",
        "--set",
        "run.seconds_per_epoch=0.7",
        *IN_PROCESS_FLAGS,
    ]
    chief = start_search(*common, "--role", "chief", log=tmp_path / "chief.log")
    wait_for(lambda: (search / "search.yaml").exists(), 120, "the chief", tmp_path / "chief.log")
    workers = [
        start_search(*common, "--role", "worker", log=tmp_path / f"worker{i}.log") for i in range(2)
    ]
    victim = workers[0]

    def beat():
        return (
            list((search / "workers").glob(f"*-{victim.pid}.alive"))
            if (search / "workers").exists()
            else []
        )

    wait_for(
        lambda: beat() and _running_trial_of(search, victim.pid) is not None,
        180,
        "worker 0's trial",
        tmp_path / "worker0.log",
    )
    killed_trial = _running_trial_of(search, victim.pid)
    os.killpg(victim.pid, signal.SIGKILL)
    assert chief.wait(timeout=300) == 0, (tmp_path / "chief.log").read_text()[-3000:]
    assert workers[1].wait(timeout=60) == 0
    trials = results(search)["trials"]
    assert sorted(t["trial_id"] for t in trials) == ["0", "1", "2", "3"]
    assert all(t["status"] == "COMPLETED" for t in trials), trials
    result = json.loads((search / "trials" / f"trial_{killed_trial}" / "result.json").read_text())
    # retried by the other worker
    assert result["tuner_id"] != f"worker-{os.uname().nodename}-{victim.pid}"
    assert "stopped answering" in (tmp_path / "chief.log").read_text()


def _running_trial_of(search: Path, pid: int) -> str | None:
    """The trial the worker with this pid is training (seen in Keras Tuner's oracle file), if any."""
    oracle = search / "keras_tuner" / "oracle.json"
    if not oracle.exists():
        return None
    try:
        ongoing = json.loads(oracle.read_text())["ongoing_trials"]
    except (json.JSONDecodeError, KeyError):
        return None
    trial_id = next((t for tuner, t in ongoing.items() if tuner.endswith(f"-{pid}")), None)
    if trial_id is None or history_rows(search / "trials" / f"trial_{trial_id}" / "run0") < 1:
        return None
    return trial_id


def test_a_search_that_its_time_limit_stops_says_so(tmp_path, capsys):
    from keras_zoo_cli.main import main

    code = main(
        [
            "tune",
            TOY,
            "--dir",
            str(tmp_path / "s"),
            "--set",
            "tuning.algorithm=random",
            "--set",
            "tuning.max_trials=3",
            "--max-time",
            "0s",
            *IN_PROCESS_FLAGS,
        ]
    )
    out, err = capsys.readouterr()
    assert code == 0, err
    assert (
        "the time limit (tuning.max_time=0s) stopped the search after 0 of 3 trials; --resume with a longer "
        "--max-time runs the rest"
    ) in out
