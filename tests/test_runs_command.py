"""`keras-zoo runs` and `keras-zoo show`: every status, sorting, JSON, deleting, reports, no TensorFlow.

The runs are made by the real code where it is cheap (the toy recipe trains in a second; a failed
run is a real `open_run_for_writing` that raises; the search is a real 2-trial toy search). A
command killed mid-run is its status record left `running` with nobody holding the lock; a run
being trained right now is the same record with this test process holding the run's lock.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import json
import operator
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

TOY = "tests.toy_recipe"
QUICK = ["train.epochs=2", "run.tensorboard=false"]


def train_toy(runs: Path, name: str, *overrides: str) -> Path:
    from recipes import engine
    from tests import toy_recipe

    cfg = toy_recipe.RECIPE.load_config(
        overrides=[*QUICK, f"run.runs_dir={runs}", f"run.name={name}", *overrides]
    )
    run, _ = engine.train(toy_recipe.RECIPE, cfg)
    return run.path


def fail_run(runs: Path, name: str, error: Exception) -> Path:
    """A run that failed after its directory was made, as the engine records it."""
    from recipes.engine.run_dir import open_run_for_writing, plan_run

    with pytest.raises(type(error)), open_run_for_writing(plan_run(str(runs), "toy", name), "toy"):
        raise error
    return runs / "toy" / name


def left_running(source: Path, target: Path) -> Path:
    """A copy of a run whose status says `running`: what a killed command leaves behind."""
    shutil.copytree(source, target)
    status = json.loads((target / "run.json").read_text())
    (target / "run.json").write_text(json.dumps({**status, "status": "running", "pid": 999999999}))
    return target


@contextlib.contextmanager
def writing(run: Path):
    """Hold the run's lock, as the command training it does."""
    with (run.parent / f".{run.name}.lock").open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        yield


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Path:
    """toy/good and toy/small (finished), toy/killed (interrupted), toy/crashed (failed), toy/live
    (running: its lock is held while the tests run) and toy/search (1 of its 2 trials completed)."""
    from tests import toy_recipe
    from tuning import tune

    runs = tmp_path_factory.mktemp("runs") / "runs"
    good = train_toy(runs, "good")
    train_toy(runs, "small", "model.units=1", "train.epochs=1", "data.noise=3.0")
    left_running(good, runs / "toy" / "killed")
    fail_run(
        runs,
        "crashed",
        RuntimeError("CUDA error\nout of memory while allocating a very large tensor"),
    )
    live = left_running(good, runs / "toy" / "live")
    cfg = toy_recipe.RECIPE.load_config(
        overrides=[
            *QUICK,
            "tuning.trial_process=in_process",
            "tuning.algorithm=grid",
            "tuning.max_trials=2",
            "model.fail_on_units=4",
            "tuning.space={model.units: [4, 8]}",
        ]
    )
    tune(TOY, cfg, runs / "toy" / "search")
    with writing(live):
        yield runs


def cli(capsys, *args: str) -> tuple[int, str, str]:
    from keras_zoo_cli.main import main

    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def table(capsys, runs: Path, *args: str) -> dict[str, str]:
    """`keras-zoo runs` lines by run name."""
    code, out, err = cli(capsys, "runs", "--runs-dir", str(runs), *args)
    assert code == 0, err
    header, *lines = out.splitlines()
    assert header.split() == [
        "recipe",
        "name",
        "status",
        "backbone",
        "epochs",
        "metrics",
        "duration",
        "date",
    ]
    return {line.split()[1]: line for line in lines}


def as_json(capsys, runs: Path, *args: str) -> list[dict]:
    code, out, err = cli(capsys, "runs", "--runs-dir", str(runs), "--json", *args)
    assert code == 0, err
    return json.loads(out)


def report(run: Path) -> dict:
    return json.loads((run / "metrics.json").read_text())


def error_line(code: int, err: str) -> str:
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    return err


# ------------------------------------------------------------------------------------------ the table
def test_the_table_shows_every_status_and_each_runs_figures(runs, capsys):
    lines = table(capsys, runs)
    assert set(lines) == {
        "toy/good",
        "toy/small",
        "toy/killed",
        "toy/crashed",
        "toy/live",
        "toy/search",
    }
    status = {name: line.split(None, 2)[2] for name, line in lines.items()}
    assert status["toy/good"].startswith("finished ") and status["toy/small"].startswith(
        "finished "
    )
    assert status["toy/killed"].startswith("interrupted ") and status["toy/live"].startswith(
        "running "
    )
    assert status["toy/crashed"].startswith("failed: RuntimeError: out of memory while all... ")
    assert status["toy/search"].startswith("search 1/2 trials, 1 failed ")
    accuracy = report(runs / "toy" / "good")["validation"]["accuracy"]
    assert " 2/2 " in lines["toy/good"] and f"val_accuracy {accuracy:.4f}" in lines["toy/good"]
    assert " 1/1 " in lines["toy/small"]
    best = json.loads((runs / "toy" / "search" / "results.json").read_text())["trials"][0]
    assert (
        best["rank"] == 1
        and f"val_accuracy {best['metrics']['val_accuracy']:.4f}" in lines["toy/search"]
    )


def test_patterns_choose_the_rows_and_reach_into_a_search(runs, capsys):
    assert set(table(capsys, runs, "toy/[gs]*")) == {"toy/good", "toy/small", "toy/search"}
    assert set(table(capsys, runs, str(runs / "toy" / "good"))) == {"toy/good"}
    trial_runs = table(capsys, runs, str(runs / "toy" / "search" / "trials" / "*" / "run0"))
    assert len(trial_runs) == 1 and all(
        name.startswith("toy/search/trials/trial_") for name in trial_runs
    )
    code, _, err = cli(capsys, "runs", "--runs-dir", str(runs), "toy/nothing*")
    assert "toy/nothing*: matches no run or search" in error_line(code, err)


def test_json_holds_every_metric_of_each_row(runs, capsys):
    from recipes.engine.run_dir import RunDir
    from recipes.engine.run_metrics import final_metrics

    rows = {row["name"]: row for row in as_json(capsys, runs)}
    good = rows["toy/good"]
    assert good["metrics"] == pytest.approx(
        final_metrics(RunDir(runs / "toy" / "good"), "val_accuracy")
    )
    assert (
        good["metrics"]["val_macro_f1"] == report(runs / "toy" / "good")["validation"]["macro_f1"]
    )
    fields = ("kind", "recipe", "status", "epochs", "backbone")
    assert [good[k] for k in fields] == ["run", "toy", "finished", "2/2", "-"]
    assert good["key_metrics"] == ["val_accuracy"] and good["duration_s"] > 0 and good["date"]
    assert (
        rows["toy/crashed"]["reason"]
        == "RuntimeError: out of memory while allocating a very large tensor"
    )
    assert rows["toy/crashed"]["metrics"] == {}
    search = rows["toy/search"]
    trial = runs / "toy" / "search" / "trials" / f"trial_{search['best_trial']}"
    trial = json.loads((trial / "result.json").read_text())
    assert search["kind"] == "search" and search["metrics"] == trial["metrics"]


@pytest.mark.parametrize("metric, best_first", [("val_accuracy", True), ("val_loss", False)])
def test_sort_puts_the_best_first_and_rows_without_the_metric_last(
    runs, capsys, metric, best_first
):
    rows = as_json(capsys, runs, "--sort", metric)
    values = [row["metrics"][metric] for row in rows if metric in row["metrics"]]
    assert len(values) == 5 and values == sorted(values, reverse=best_first)
    assert [row["name"] for row in rows][-1] == "toy/crashed"
    assert (
        list(table(capsys, runs, "--sort", metric))[: len(values)]
        == [row["name"] for row in rows][: len(values)]
    )


def test_an_unknown_sort_metric_is_one_error_listing_the_metrics(runs, capsys):
    code, _, err = cli(capsys, "runs", "--runs-dir", str(runs), "--sort", "val_acuracy")
    assert "--sort: no run has the metric 'val_acuracy'; the metrics: " in error_line(code, err)
    assert "val_accuracy" in err and "val_macro_f1" in err


# ------------------------------------------------------------------------------------------ delete
@pytest.fixture
def copy(runs, tmp_path) -> Path:
    """The runs to delete from: a copy (nobody holds its locks)."""
    shutil.copytree(runs, tmp_path / "runs", symlinks=True)
    return tmp_path / "runs"


def test_delete_removes_finished_failed_and_searches_with_their_locks(copy, capsys):
    code, out, err = cli(
        capsys,
        "runs",
        "--runs-dir",
        str(copy),
        "--delete",
        "toy/good",
        str(copy / "toy" / "crashed"),
        "toy/search",
    )
    assert code == 0, err
    assert [line.split(" (")[0] for line in out.splitlines()] == [
        "deleted toy/good",
        "deleted toy/crashed",
        "deleted toy/search",
    ]
    assert all(
        re.search(r" \(\d+(\.\d)? (bytes|KiB|MiB) freed\)$", line) for line in out.splitlines()
    ), out
    left = sorted(p.name for p in (copy / "toy").iterdir())
    assert left == [".live.lock", ".small.lock", "killed", "live", "small"]


@pytest.mark.parametrize(
    "refused, why",
    [
        ("toy/live", "toy/live: running; stop it first"),
        ("toy", "toy: not a keras-zoo run or search"),
        ("toy/nothing", "toy/nothing: no such run or search"),
    ],
)
def test_delete_refuses_and_then_deletes_nothing(copy, capsys, refused, why):
    before = sorted(str(p) for p in copy.rglob("*"))
    with writing(copy / "toy" / "live"):
        code, out, err = cli(
            capsys, "runs", "--runs-dir", str(copy), "--delete", "toy/good", "toy/crashed", refused
        )
    assert why in error_line(code, err) and out == ""
    assert sorted(str(p) for p in copy.rglob("*")) == before


def test_a_replacement_being_trained_shows_and_blocks_deleting_its_run(copy, capsys):
    left_running(copy / "toy" / "good", copy / "toy" / ".good.partial")
    with writing(copy / "toy" / "good"):
        assert table(capsys, copy)["toy/good"].split(None, 4)[2:4] == ["finished", "(replacement"]
        code, _, err = cli(capsys, "runs", "--runs-dir", str(copy), "--delete", "toy/good")
        assert "toy/good: another command is writing it" in error_line(code, err)
    assert (copy / "toy" / "good").is_dir()


def test_a_search_whose_chief_is_running_shows_running_and_is_not_deleted(copy, capsys):
    """Between two trials nothing but the chief's lock says the search is alive."""
    from recipes.engine.run_dir import hold_lock

    with hold_lock(copy / "toy" / "search", "busy"):
        assert "search 1/2 trials, 1 failed, running" in table(capsys, copy)["toy/search"]
        code, _, err = cli(capsys, "runs", "--runs-dir", str(copy), "--delete", "toy/search")
        assert "toy/search: the search is running; stop it first" in error_line(code, err)
    assert (copy / "toy" / "search" / "search.yaml").exists()


# -------------------------------------------------------------------------------------------- show
def test_show_prints_the_figures_of_metrics_json(runs, capsys):
    code, out, err = cli(capsys, "show", "toy/good", "--runs-dir", str(runs))
    assert code == 0, err
    validation = report(runs / "toy" / "good")["validation"]
    assert (
        "status:   finished" in out and f"config:   {runs / 'toy' / 'good' / 'config.yaml'}" in out
    )
    assert (
        f"accuracy {validation['accuracy']:.4f}" in out
        and "kept epoch 2 of 2 (best val_accuracy" in out
    )
    code, out, err = cli(capsys, "show", str(runs / "toy" / "crashed"))
    assert (
        code == 0
        and "status:   failed: RuntimeError: out of memory while allocating a very large tensor"
        in out
    )


def test_show_uses_the_recipes_report_format(runs, tmp_path, capsys):
    run = shutil.copytree(runs / "toy" / "good", tmp_path / "sentiment" / "demo")
    status = json.loads((run / "run.json").read_text())
    (run / "run.json").write_text(json.dumps({**status, "recipe": "sentiment"}))
    code, out, err = cli(capsys, "show", "sentiment/demo", "--runs-dir", str(tmp_path))
    per_class = report(run)["validation"]["per_class"]["a"]
    assert code == 0 and "| class | precision | recall | f1 | support |" in out, err
    assert (
        f"| a | {per_class['precision']:.4f} | {per_class['recall']:.4f} | {per_class['f1']:.4f} |"
        in out
    )


def test_show_prints_a_searchs_results_table(runs, capsys):
    code, out, err = cli(capsys, "show", "toy/search", "--runs-dir", str(runs))
    results = json.loads((runs / "toy" / "search" / "results.json").read_text())
    assert code == 0, err
    assert "status:   search 1/2 trials, 1 failed" in out and "rank  trial  status" in out
    assert (
        f"{results['trials'][0]['objective']:.6g}" in out and "4 units is the failing value" in out
    )


@pytest.mark.parametrize(
    "name, message",
    [
        ("toy/nothing", "toy/nothing: no such run or search"),
        ("toy", "toy: not a keras-zoo run or search"),
    ],
)
def test_show_errors_are_one_line(runs, capsys, name, message):
    code, _, err = cli(capsys, "show", name, "--runs-dir", str(runs))
    assert message in error_line(code, err)


# ------------------------------------------------------------------------------------------- speed
def test_runs_and_show_import_no_tensorflow(runs, tmp_path):
    for recipe in ("sentiment", "image_classification"):
        run = shutil.copytree(runs / "toy" / "good", tmp_path / recipe / "demo")
        status = json.loads((run / "run.json").read_text())
        (run / "run.json").write_text(json.dumps({**status, "recipe": recipe}))
    code = (
        "import sys\n"
        "from keras_zoo_cli.main import main\n"
        f"assert main(['runs', '--runs-dir', {str(runs)!r}]) == 0\n"
        f"assert main(['show', 'toy/search', '--runs-dir', {str(runs)!r}]) == 0\n"
        f"assert main(['show', 'sentiment/demo', '--runs-dir', {str(tmp_path)!r}]) == 0\n"
        f"assert main(['show', 'image_classification/demo', '--runs-dir', {str(tmp_path)!r}]) == 0\n"
        "heavy = [m for m in ('tensorflow', 'keras', 'keras_hub', 'keras_tuner') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-3000:]


# ------------------------------------------------------------------------------------ malformed files
@pytest.mark.parametrize(
    "file, content, why",
    [
        ("run.json", "[]", "run.json: holds a list, not a mapping"),
        (
            "run.json",
            '{"status": 7, "created_at": "yesterday"}',
            "run.json: 'status' is 7, not text",
        ),
        (
            "run.json",
            '{"status": "finished", "created_at": "yesterday"}',
            "run.json: 'created_at' is 'yesterday', not a number",
        ),
        ("run.json", "{not json", "run.json: not JSON (line 1, column 2"),
        (
            "metrics.json",
            '{"validation": [1, 2]}',
            "metrics.json: 'validation' is a list, not a mapping",
        ),
        ("config.yaml", "train: [1, 2]\n", "config.yaml: 'train' is [1, 2], not a mapping"),
        ("config.yaml", "train: {a: 1\n", "config.yaml: not YAML (line 2, column 1"),
    ],
)
def test_one_malformed_file_makes_its_run_unreadable_and_every_other_run_lists(
    copy, capsys, file, content, why
):
    (copy / "toy" / "killed" / file).write_text(content)
    rows = table(capsys, copy)
    # all listed
    assert sorted(rows) == [
        f"toy/{n}" for n in ("crashed", "good", "killed", "live", "search", "small")
    ]
    assert f"unreadable: {why}" in rows["toy/killed"]
    assert "finished" in rows["toy/good"]
    row = next(r for r in as_json(capsys, copy) if r["name"] == "toy/killed")
    assert row["status"].startswith(f"unreadable: {why}")
    table(capsys, copy, "--sort", "val_accuracy")  # sorting copes with it too
    code, out, err = cli(capsys, "show", "toy/killed", "--runs-dir", str(copy))
    assert f"unreadable: {why}" in error_line(code, err)
    # still the engine's folder
    code, out, err = cli(capsys, "runs", "--runs-dir", str(copy), "--delete", "toy/killed")
    assert code == 0 and out.startswith("deleted toy/killed"), err
    assert not (copy / "toy" / "killed").exists()


def test_training_or_predicting_on_a_run_with_a_malformed_record_is_one_line(copy, capsys):
    run = copy / "toy" / "good"
    (run / "run.json").write_text('{"status": 7}')
    code, _, err = cli(
        capsys,
        "train",
        TOY,
        "--runs-dir",
        str(copy),
        "--name",
        "good",
        *functools.reduce(operator.iadd, (["--set", o] for o in QUICK), []),
    )
    assert (
        "a run of this name is there, but run.json: 'status' is 7, not text; --overwrite replaces it"
        in error_line(code, err)
    )
    code, _, err = cli(capsys, "predict", TOY, str(run), "1,2")
    assert "run.json: 'status' is 7, not text" in error_line(code, err)
    code, _, err = cli(
        capsys,
        "train",
        TOY,
        "--runs-dir",
        str(copy),
        "--name",
        "good",
        "--overwrite",
        *functools.reduce(operator.iadd, (["--set", o] for o in QUICK), []),
    )
    assert code == 0, err
    assert json.loads((run / "run.json").read_text())["status"] == "finished"
