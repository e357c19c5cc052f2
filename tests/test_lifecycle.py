"""The run lifecycle the engine owns for every recipe: check first, write last, never lose a run.

Most cases run the toy recipe (tests/toy_recipe.py: a 2-D MLP that trains in a second) through the
real command line, so they test the engine, not a model; the cases that are about one recipe's
data use that recipe with a tiny backbone.
"""

from __future__ import annotations

import hashlib
import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import (
    ROOT,
    cli,
    cli_here,
    made_once,
    make_image_folder,
    make_reviews,
    write_jsonl,
)
from zoo.errors import UserError

TOY = "tests.toy_recipe"
FAST = ["--set", "train.epochs=2", "--set", "run.tensorboard=false"]


def error_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.startswith("keras-zoo: error:")]
    assert len(lines) == 1 and "Traceback" not in stderr, stderr[-2000:]
    return lines[0]


def snapshot(path: Path) -> dict[str, str]:
    """Every file under `path` with a hash of its bytes."""
    return {
        str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(path.rglob("*"))
        if p.is_file()
    }


@pytest.fixture
def finished(tmp_path, tmp_path_factory) -> tuple[Path, Path, dict[str, str]]:
    """A finished toy run `runs/toy/a`, the test's own copy of one trained once per session, and
    a snapshot of it."""

    def train(folder: Path) -> None:
        code, _, err = cli("train", TOY, "--name", "a", "--runs-dir", str(folder / "runs"), *FAST)
        assert code == 0, err

    runs = tmp_path / "runs"
    shutil.copytree(made_once(tmp_path_factory, "toy_finished", train) / "runs", runs)
    run = runs / "toy" / "a"
    assert json.loads((run / "run.json").read_text())["status"] == "finished"
    return runs, run, snapshot(run)


def hidden(runs: Path) -> list[str]:
    return sorted(
        p.name
        for p in (runs / "toy").iterdir()
        if p.name.startswith(".") and not p.name.endswith(".lock")
    )


# ------------------------------------------------------------------------------ checks before writing
@pytest.mark.parametrize(
    "setting, message",
    [
        ("train.batch_size=0", "train.batch_size: must be at least 1, not 0"),
        ("train.epochs=0", "train.epochs: must be at least 1, not 0"),
        ("train.learning_rate=-1", "train.learning_rate: must be more than 0, not -1.0"),
        (
            "train.warmup_ratio=1.5",
            "train.warmup_ratio: must be at least 0 and less than 1, not 1.5",
        ),
        ("train.clipnorm=-1", "train.clipnorm: must be at least 0, not -1.0"),
        ("train.epochs=[x", "'train.epochs' must be int, not '[x'"),
        ("train.learning_rate=*.csv", "'train.learning_rate' must be float, not '*.csv'"),
        ("train.nope=1", "unknown config key 'train.nope'"),
    ],
)
def test_a_bad_setting_with_overwrite_is_one_line_and_the_old_run_stays(finished, setting, message):
    runs, run, before = finished
    code, _, err = cli(
        "train", TOY, "--name", "a", "--runs-dir", str(runs), "--overwrite", "--set", setting
    )
    assert code == 2 and message in error_line(err)
    assert snapshot(run) == before and hidden(runs) == []


def test_string_settings_take_the_text_as_it_is(tmp_path):
    from recipes.engine.config import load_config_and_keys
    from recipes.sentiment.recipe import SentimentConfig

    cfg, keys = load_config_and_keys(
        SentimentConfig,
        None,
        ["run.name=2024-01-01", "data.train=*.csv", "data.text_column=[x", "train.epochs=3"],
    )
    assert (cfg.run.name, cfg.data.train, cfg.data.text_column, cfg.train.epochs) == (
        "2024-01-01",
        "*.csv",
        "[x",
        3,
    )
    assert keys == ["run.name", "data.train", "data.text_column", "train.epochs"]
    code, _, err = cli(
        "train", "sentiment", "--runs-dir", str(tmp_path), "--set", "data.train=*.csv"
    )
    assert code == 2 and "*.csv: file not found" in error_line(err)
    config = tmp_path / "c.yaml"
    config.write_text("run:\n  name: 2024-01-01\n")
    code, _out, err = cli("train", TOY, "--config", str(config), "--runs-dir", str(tmp_path), *FAST)
    assert code == 0, err
    assert (tmp_path / "toy" / "2024-01-01" / "run.json").exists()


def test_overwrite_refuses_what_is_not_a_run_and_names_that_are_paths(tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    code, _, err = cli("train", TOY, "--set", f"run.dir={mine}", "--overwrite", *FAST)
    assert code == 2 and "exists and is not a keras-zoo run; refusing to replace it" in error_line(
        err
    )
    code, _, err = cli("train", TOY, "--name", str(mine), "--overwrite", *FAST)
    assert code == 2 and "must be a plain name" in error_line(err)
    assert (mine / "notes.txt").read_text() == "keep me" and sorted(os.listdir(mine)) == [
        "notes.txt"
    ]


def test_unwritable_runs_directory_is_one_line(tmp_path, monkeypatch):
    from recipes.engine import run_dir

    monkeypatch.setattr(run_dir.os, "access", lambda path, mode: False)
    code, _, err = cli("train", TOY, "--runs-dir", str(tmp_path / "runs"), *FAST)
    assert (
        code == 2
        and "cannot write there (permission denied, or a read-only file system)" in error_line(err)
    )
    monkeypatch.undo()

    def refuse(self, *args, **kwargs):
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "mkdir", refuse)
    code, _, err = cli("train", TOY, "--runs-dir", str(tmp_path / "runs"), *FAST)
    assert code == 2 and "cannot write the run there (Permission denied)" in error_line(err)


def test_sentiment_with_only_training_data_validates_on_a_split_of_it(tmp_path):
    from recipes.sentiment.recipe import RECIPE

    train = write_jsonl(tmp_path / "train.jsonl", make_reviews(100, seed=1))
    data = RECIPE.read_data(RECIPE.load_config(overrides=[f"data.train={train}"]))
    assert len(data.validation) == 10 and len(data.train) == 90
    assert all(origin.startswith(str(train)) for origin in data.validation.origins)
    assert sorted(data.validation.labels) == ["negative"] * 5 + ["positive"] * 5  # stratified
    demo = RECIPE.read_data(RECIPE.load_config())
    # demo only for demo
    assert all("sentiment_dev.jsonl" in origin for origin in demo.validation.origins)


def test_a_validation_label_unseen_in_training_keeps_the_old_run(finished, tmp_path):
    runs, _, _ = finished
    old = runs / "sentiment" / "a"  # a finished sentiment run (its files stand in for a real one)
    (old / "export").mkdir(parents=True)
    for name, text in {
        "config.yaml": "{}\n",
        "history.csv": "epoch\n0\n",
        "export/model.keras": "weights",
        "run.json": json.dumps({"status": "finished"}),
    }.items():
        (old / name).write_text(text)
    before = snapshot(old)
    train = write_jsonl(tmp_path / "train.jsonl", make_reviews(20))
    dev = write_jsonl(tmp_path / "dev.jsonl", [{"text": "so so", "label": "neutral"}])
    code, _, err = cli(
        "train",
        "sentiment",
        "--name",
        "a",
        "--runs-dir",
        str(runs),
        "--overwrite",
        "--set",
        f"data.train={train}",
        "--set",
        f"data.validation={dev}",
    )
    assert code == 2 and f"{dev}:1: label 'neutral' was never seen in training" in error_line(err)
    assert snapshot(old) == before and sorted(p.name for p in (runs / "sentiment").iterdir()) == [
        "a"
    ]


def test_a_validation_folder_where_nothing_decodes_keeps_the_old_run(tiny_image_backbone, tmp_path):
    photos = make_image_folder(tmp_path / "photos", 3)
    val = tmp_path / "val"
    for name in ("red", "blue"):
        (val / name).mkdir(parents=True)
        (val / name / "broken.jpg").write_text("not an image")
    common = [
        "--name",
        "a",
        "--runs-dir",
        str(tmp_path / "runs"),
        "--set",
        f"model.backbone={tiny_image_backbone}",
        "--set",
        f"data.train={photos}",
        "--set",
        "train.head_epochs=1",
        "--set",
        "train.epochs=0",
        "--set",
        "train.run_eagerly=true",
        "--set",
        "run.tensorboard=false",
        "--set",
        "run.export=false",
    ]
    code, _, err = cli("train", "image_classification", *common)
    assert code == 0, err
    run = tmp_path / "runs" / "image_classification" / "a"
    before = snapshot(run)
    code, _, err = cli(
        "train", "image_classification", *common, "--overwrite", "--set", f"data.validation={val}"
    )
    assert code == 2 and f"{val}: no validation image decodes (2 files tried)" in error_line(err)
    assert snapshot(run) == before


@pytest.mark.parametrize("recipe", ["sentiment", "image_classification"])
def test_predict_refuses_an_empty_input(recipe, tmp_path):
    code, _, err = cli("predict", recipe, str(tmp_path), "")
    assert code == 2 and "predict: input 1 is empty" in error_line(err)


def test_a_model_file_keras_refuses_is_one_line(finished):
    import keras

    _, run, _ = finished
    model = keras.Sequential(
        [keras.Input((2,)), keras.layers.Lambda(lambda x: x * 2), keras.layers.Dense(2)]
    )
    model.save(str(run / "export" / "model.keras"))
    code, _, err = cli("predict", TOY, str(run), "1,1")
    assert code == 2 and f"{run / 'export' / 'model.keras'}: Keras cannot load it" in error_line(
        err
    )


# ---------------------------------------------------------------------------------- status and resume
def test_resume_refuses_training_changes_and_applies_logging_ones(finished):
    runs, run, _ = finished
    # as a kill during evaluation leaves it
    (run / "run.json").write_text(json.dumps({"status": "interrupted"}))
    code, _, err = cli(
        "train",
        TOY,
        "--name",
        "a",
        "--runs-dir",
        str(runs),
        "--resume",
        "--set",
        "train.epochs=3",
        "--set",
        "train.learning_rate=5e-5",
    )
    assert code == 2
    assert (
        "--resume: train.epochs, train.learning_rate would change how the run trains "
        "(it has train.epochs=2, train.learning_rate=0.01)"
    ) in error_line(err)
    code, out, err = cli(
        "train",
        TOY,
        "--name",
        "a",
        "--runs-dir",
        str(runs),
        "--resume",
        *FAST,
        "--set",
        "run.log_every_steps=7",
        "--set",
        "tuning.space.model.units=[4, 8]",
    )
    assert code == 0, err
    assert "resuming with run.log_every_steps=7 (was 50)" in out
    assert "log_every_steps: 7" in (run / "config.yaml").read_text()


def test_the_speedups_switch_from_the_environment_is_recorded_and_a_resume_may_not_change_it(
    finished, monkeypatch
):
    runs, run, _ = finished
    assert "speedups: true" in (run / "config.yaml").read_text()
    monkeypatch.setenv("KERAS_ZOO_SPEEDUPS", "0")
    code, _, err = cli("train", TOY, "--name", "off", "--runs-dir", str(runs), *FAST)
    assert code == 0, err
    off = runs / "toy" / "off"
    assert "speedups: false" in (off / "config.yaml").read_text()
    assert json.loads((off / "run.json").read_text())["runtime"]["speedups"] is False
    (off / "run.json").write_text(
        json.dumps({**json.loads((off / "run.json").read_text()), "status": "interrupted"})
    )
    monkeypatch.setenv("KERAS_ZOO_SPEEDUPS", "1")
    code, _, err = cli("train", TOY, "--name", "off", "--runs-dir", str(runs), "--resume")
    assert code == 2
    assert (
        "--resume: train.speedups would change how the run trains (it has train.speedups=False)"
        in error_line(err)
    )
    monkeypatch.setenv("KERAS_ZOO_SPEEDUPS", "maybe")
    code, _, err = cli("train", TOY, "--name", "x", "--runs-dir", str(runs), *FAST)
    assert (
        code == 2
        and error_line(err) == "keras-zoo: error: KERAS_ZOO_SPEEDUPS: 'maybe' is not 0 or 1"
    )


def test_run_json_keeps_what_auto_resolved_to_through_every_status_and_a_resume(
    finished, monkeypatch
):
    """The runtime record (precision, XLA, strategy, replicas, devices) is written when training
    starts and kept through `finished`, an interruption, the resume and its finish; `show` and the
    model card print it."""
    runs, run, _ = finished
    status = json.loads((run / "run.json").read_text())
    runtime = status["runtime"]
    # the toy's config says float32
    assert runtime["precision"] == "float32" and runtime["jit_compile"] is False
    assert (
        runtime["strategy"] == "none" and runtime["replicas"] == 1 and runtime["speedups"] is True
    )
    assert runtime["devices"]["cpu"] and runtime["devices"]["cpu_bf16"] in ("native", "emulated")
    assert status["recipe"] == "toy" and status["origin"][:2] == ["keras-zoo", "train"]
    code, out, err = cli("show", str(run))
    assert code == 0, err
    assert "runtime:  float32, XLA off, strategy none (1 replica), speedups on; CPU " in out
    assert (
        "Trained with float32, XLA off, strategy none (1 replica)"
        in (run / "README.md").read_text()
    )

    (run / "run.json").write_text(
        json.dumps({**status, "status": "interrupted", "reason": "killed"})
    )
    monkeypatch.setenv("KERAS_ZOO_CPU_BF16", "native")  # the resume runs "on another CPU"
    code, out, err = cli("train", TOY, "--name", "a", "--runs-dir", str(runs), "--resume", *FAST)
    assert code == 0, err
    resumed = json.loads((run / "run.json").read_text())
    assert resumed["status"] == "finished" and "reason" not in resumed
    assert resumed["runtime"]["devices"]["cpu_bf16"] == "native (KERAS_ZOO_CPU_BF16)"
    assert (
        resumed["earlier_runtimes"] == [runtime]
        and resumed["recipe"] == "toy"
        and resumed["origin"] == status["origin"]
    )
    assert "resuming with another runtime: devices" in out


def test_the_cpu_bf16_variable_forces_auto_both_ways_and_names_a_bad_value(monkeypatch):
    from recipes.engine import devices

    flags = frozenset({"avx2", "avx512f"})  # no native bf16
    monkeypatch.setenv("KERAS_ZOO_CPU_BF16", "native")
    assert (
        devices.resolve_precision(
            "auto", devices.Devices(cpu_flags=flags, cpu_bf16_forced=devices.forced_cpu_bf16())
        )
        == "mixed_bfloat16"
    )
    monkeypatch.setenv("KERAS_ZOO_CPU_BF16", "emulated")
    native = flags | {"avx512_bf16"}
    assert (
        devices.resolve_precision(
            "auto", devices.Devices(cpu_flags=native, cpu_bf16_forced=devices.forced_cpu_bf16())
        )
        == "float32"
    )
    assert (
        devices.resolve_precision("mixed_bfloat16", devices.Devices(cpu_bf16_forced="emulated"))
        == "mixed_bfloat16"
    )
    monkeypatch.setenv("KERAS_ZOO_CPU_BF16", "yes")
    with pytest.raises(UserError, match="KERAS_ZOO_CPU_BF16: 'yes' is not one of native, emulated"):
        devices.forced_cpu_bf16()


def test_a_model_whose_weights_are_not_finite_is_refused_by_predict_evaluate_and_export(finished):
    import keras

    _runs, run, _ = finished
    model = keras.saving.load_model(run / "export" / "model.keras", compile=False)
    weights = model.get_weights()
    weights[0][0] = np.nan
    model.set_weights(weights)
    model.save(run / "export" / "model.keras")
    for command in (
        ["predict", TOY, str(run), "1,2"],
        ["evaluate", TOY, str(run)],
        ["export", TOY, str(run)],
    ):
        code, _, err = cli(*command)
        assert code == 2 and "some weights are not finite (NaN or Inf)" in error_line(err), command


def test_a_failed_run_records_why_and_does_not_block_the_corrected_rerun(tmp_path):
    runs = tmp_path / "runs"
    code, _, err = cli(
        "train",
        TOY,
        "--name",
        "f",
        "--runs-dir",
        str(runs),
        *FAST,
        "--set",
        "train.monitor=val_nope",
    )
    assert code == 2 and "train.monitor: 'val_nope' is not a logged metric" in error_line(err)
    status = json.loads((runs / "toy" / "f" / "run.json").read_text())
    assert status["status"] == "failed" and "val_nope" in status["reason"]
    code, out, err = cli("train", TOY, "--name", "f", "--runs-dir", str(runs), *FAST)
    assert code == 0, err
    assert "the failed run there is replaced when this one finishes" in out
    assert json.loads((runs / "toy" / "f" / "run.json").read_text())["status"] == "finished"
    assert hidden(runs) == []


def test_resume_of_a_finished_run_is_refused(finished):
    runs, run, before = finished
    code, _, err = cli("train", TOY, "--name", "a", "--runs-dir", str(runs), "--resume")
    assert code == 2 and "finished; nothing to resume (--overwrite trains it again)" in error_line(
        err
    )
    assert snapshot(run) == before


def test_a_search_never_replaces_a_training_run_or_another_folder(finished, tmp_path):
    _runs, run, before = finished
    for target in (run, tmp_path / "mine"):
        (tmp_path / "mine").mkdir(exist_ok=True)
        (tmp_path / "mine" / "notes.txt").write_text("keep me")
        code, _, err = cli(
            "tune", TOY, "--dir", str(target), "--overwrite", "--set", "tuning.max_trials=1"
        )
        assert code == 2 and "is not a keras-zoo search; refusing to replace it" in error_line(err)
    assert snapshot(run) == before and (tmp_path / "mine" / "notes.txt").read_text() == "keep me"


def test_a_crop_scale_out_of_range_is_one_line():
    from recipes.image_classification.recipe import RECIPE
    from zoo.errors import UserError

    with pytest.raises(
        UserError, match=r"^augment.crop_scale: must be \[low, high\] with 0 < low <= high <= 1"
    ):
        RECIPE.load_config(overrides=["augment.crop_scale=[0.9, 0.2]"])


def test_scratch_left_by_a_kill_never_blocks_and_only_runs_count(tmp_path):
    runs = tmp_path / "runs"
    scratch = runs / "toy" / ".a.creating"  # a kill while the run directory was being made
    (scratch / "checkpoints").mkdir(parents=True)
    code, _, err = cli("train", TOY, "--name", "a", "--runs-dir", str(runs), *FAST)
    assert code == 0, err
    assert not scratch.exists() and hidden(runs) == []
    lookalike = tmp_path / "project"  # config.yaml and history.csv alone do not make a run
    lookalike.mkdir()
    (lookalike / "config.yaml").write_text("mine: 1\n")
    (lookalike / "history.csv").write_text("mine\n")
    code, _, err = cli("train", TOY, "--set", f"run.dir={lookalike}", "--overwrite", *FAST)
    assert code == 2 and "is not a keras-zoo run" in error_line(err)
    assert sorted(os.listdir(lookalike)) == ["config.yaml", "history.csv"]


def test_a_folder_without_run_json_is_not_a_run(finished):
    runs, run, _ = finished
    (run / "run.json").unlink()  # config.yaml, history.csv and the model alone do not make a run
    code, _, err = cli("train", TOY, "--name", "a", "--runs-dir", str(runs), *FAST, "--overwrite")
    assert code == 2 and "is not a keras-zoo run" in error_line(err)
    code, _, err = cli("predict", TOY, str(run), "x")
    assert code == 2 and error_line(err).endswith(
        f"error: {run}: not a run directory (no run.json)"
    )
    assert (run / "config.yaml").exists() and (run / "history.csv").exists()


def test_an_interrupted_swap_is_completed_or_undone_by_the_next_command(tmp_path):
    from recipes.engine.run_dir import old_path, partial_path, recover_swap, write_json

    final = tmp_path / "toy" / "a"

    def make(path: Path, status: str) -> None:
        path.mkdir(parents=True)
        write_json(path / "run.json", {"status": status})
        (path / "which").write_text(path.name)

    # killed after the old run was renamed aside, before the new one was renamed in
    make(old_path(final), "finished")
    make(partial_path(final), "finished")
    recover_swap(final)
    assert (final / "which").read_text() == ".a.partial" and not old_path(final).exists()
    # killed before the old one's deletion
    make(old_path(final), "finished")
    recover_swap(final)
    assert (final / "which").read_text() == ".a.partial" and not old_path(final).exists()
    # the replacement never finished: the old run comes back
    final.rename(old_path(final))
    make(partial_path(final), "running")
    recover_swap(final)
    assert (final / "which").read_text() == ".a.partial" and partial_path(final).exists()
    # killed after the replacement was marked finished, before the first rename
    write_json(partial_path(final) / "run.json", {"status": "finished"})
    (partial_path(final) / "which").write_text("newest")
    recover_swap(final)
    assert (final / "which").read_text() == "newest" and not partial_path(final).exists()
    assert not old_path(final).exists()


# ------------------------------------------------------------------------------------------- SIGKILL
# `python -m keras_zoo_cli` with Python's Ctrl-C handler installed whatever SIGINT's inherited
# disposition: a shell without job control (`make test &`, nohup) starts its background commands
# with SIGINT ignored, their children inherit that, and Python then installs no handler.
INTERRUPTIBLE_CLI = (
    "-c",
    "import runpy, signal; signal.signal(signal.SIGINT, signal.default_int_handler); "
    "runpy.run_module('keras_zoo_cli', run_name='__main__', alter_sys=True)",
)


def start(*args: str) -> subprocess.Popen:
    """`keras-zoo ARGS` in the background; a thread queues its output lines for `wait_for_line`."""
    process = subprocess.Popen(
        [sys.executable, *INTERRUPTIBLE_CLI, *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    process.lines = queue.Queue()

    def read() -> None:
        with process.stdout:
            for line in process.stdout:
                process.lines.put(line)

    threading.Thread(target=read, daemon=True).start()
    return process


def wait_for_line(process: subprocess.Popen, text: str, timeout: float = 120) -> None:
    """Return as soon as the process prints a line containing `text`. (A reader thread, not
    `select` on the pipe: `select` does not see lines already in the pipe's read buffer, and would
    wait for the next output, which a slowed-down step delays for a minute.)"""
    deadline = time.time() + timeout
    seen = []
    while time.time() < deadline:
        try:
            line = process.lines.get(timeout=1.0)
        except queue.Empty:
            if process.poll() is not None and process.lines.empty():
                break
            continue
        seen.append(line)
        if text in line:
            return
    raise AssertionError(f"no line with {text!r}; the process printed:\n{''.join(seen)[-3000:]}")


def kill(process: subprocess.Popen) -> None:
    process.send_signal(signal.SIGKILL)
    process.wait()


@pytest.mark.parametrize(
    "moment, slow_setting, line",
    [
        ("data checks", "run.seconds_to_read=60", "toy: reading data"),
        ("epoch 1", "run.seconds_per_epoch=60", "toy: epoch 1 done"),
        ("export", "run.seconds_to_export=60", "toy: exporting"),
    ],
)
def test_sigkill_during_overwrite_leaves_the_old_run_whole_and_resume_finishes_the_new(
    finished, moment, slow_setting, line
):
    runs, run, before = finished
    args = [
        "train",
        TOY,
        "--name",
        "a",
        "--runs-dir",
        str(runs),
        *FAST,
        "--set",
        "train.learning_rate=0.05",
    ]
    process = start(*args, "--overwrite", "--set", slow_setting)
    wait_for_line(process, line)
    kill(process)
    assert snapshot(run) == before, f"the old run changed after a kill during {moment}"
    code, _, err = cli(*args)
    # nothing half-made stands in
    assert code == 2 and "a finished run of this name is there" in error_line(err)
    if moment == "data checks":
        assert hidden(runs) == []
        return
    assert hidden(runs) == [".a.partial"]
    # --resume continues the replacement (from its last epoch) and swaps it in when it finishes
    code, _, err = cli(*args, "--resume", "--set", slow_setting.split("=")[0] + "=0")
    assert code == 0, err
    assert hidden(runs) == [] and json.loads((run / "run.json").read_text())["status"] == "finished"
    assert "learning_rate: 0.05" in (run / "config.yaml").read_text() and snapshot(run) != before


def test_a_second_command_on_a_run_being_trained_is_refused(tmp_path):
    runs = tmp_path / "runs"
    args = ["train", TOY, "--name", "a", "--runs-dir", str(runs), *FAST]
    process = start(*args, "--set", "run.seconds_per_epoch=60")
    try:
        wait_for_line(process, "toy: epoch 1 done")
        for extra in ([], ["--overwrite"], ["--resume"]):
            code, _, err = cli(*args, *extra)
            assert code == 2 and "right now" in error_line(err), extra
        assert json.loads((runs / "toy" / "a" / "run.json").read_text())["status"] == "running"
    finally:
        kill(process)
    from recipes.engine.run_dir import run_status

    # the lock went with the process
    assert run_status(runs / "toy" / "a")["status"] == "interrupted"
    code, _, err = cli(*args)
    assert (
        code == 2
        and "an interrupted run of this name is there; --resume continues it, --overwrite"
        in error_line(err)
    )
    code, _, err = cli(*args, "--resume", "--set", "run.seconds_per_epoch=0")
    assert code == 0, err


def test_ctrl_c_marks_the_run_interrupted(tmp_path):
    runs = tmp_path / "runs"
    process = start(
        "train",
        TOY,
        "--name",
        "a",
        "--runs-dir",
        str(runs),
        *FAST,
        "--set",
        "run.seconds_per_epoch=60",
    )
    wait_for_line(process, "toy: epoch 1 done")
    process.send_signal(signal.SIGINT)
    try:
        returncode = process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        kill(process)
        printed = "".join(process.lines.get() for _ in range(process.lines.qsize()))
        raise AssertionError(
            f"still running 60 s after SIGINT; after the epoch line it printed:\n{printed[-3000:]}"
        ) from None
    assert returncode == 130
    assert json.loads((runs / "toy" / "a" / "run.json").read_text())["status"] == "interrupted"


# --------------------------------------------------------------------------------------- the contract
def test_every_registered_recipe_and_the_toy_follow_the_contract():
    import importlib.util

    from recipes.engine.contract import Recipe
    from recipes.engine.registry import RECIPES, load_recipe, report_format

    for name in [*RECIPES, TOY]:
        recipe = load_recipe(name)
        assert isinstance(recipe, Recipe) and not getattr(type(recipe), "__abstractmethods__", None)
        assert recipe.name == name.rsplit(".", 1)[-1].replace("toy_recipe", "toy")
    for (
        name
    ) in RECIPES:  # `keras-zoo show`'s formatter of each recipe's reports is the recipe's own
        report = {
            "accuracy": 0.5,
            "macro_f1": 0.5,
            "num_examples": 2,
            "per_class": {},
            "labels": [],
        }
        if name == "ner":
            report = {
                "precision": 0.5,
                "recall": 0.25,
                "f1": 1 / 3,
                "macro_f1": 0.3,
                "per_type": {},
                "token_accuracy": 0.9,
                "correct_entities": 1,
                "predicted_entities": 2,
                "true_entities": 4,
                "num_sentences": 1,
                "num_tokens": 9,
            }
        assert report_format(name)(report) == load_recipe(name).format_report(report), name
    for name, module in RECIPES.items():  # task code only: the lifecycle is the engine's
        package = Path(importlib.util.find_spec(module).origin).parent  # recipes/<task>/
        source = "".join(path.read_text() for path in sorted(package.glob("*.py")))
        assert "class" in source and (package / "recipe.py").exists(), name
        for lifecycle in (
            "open_run_for_writing",
            "plan_run",
            "save_config(",
            ".fit(",
            "write_report(",
        ):
            assert lifecycle not in source, (name, lifecycle)


def test_a_search_with_a_bad_max_time_leaves_nothing(tmp_path):
    result = cli_here("tune", TOY, "--dir", str(tmp_path / "s"), "--max-time", "abc")
    assert result.returncode == 2 and "tuning.max_time" in error_line(result.stderr)
    assert not (tmp_path / "s").exists()


def test_a_kept_epoch_before_the_last_is_exported_and_the_last_epoch_is_reported_beside_it(
    tmp_path,
):
    """`train.monitor=learning_rate` (highest is best) keeps an early epoch for certain: the
    schedule decays to 0 at the end. The exported model must hold the kept epoch's weights, and
    metrics.json the last epoch's figures beside the kept one's."""
    import keras

    runs = tmp_path / "runs"
    code, out, err = cli(
        "train",
        TOY,
        "--name",
        "a",
        "--runs-dir",
        str(runs),
        "--set",
        "train.epochs=3",
        "--set",
        "train.monitor=learning_rate",
        "--set",
        "train.early_stopping_patience=0",
        "--set",
        "run.tensorboard=false",
    )
    assert code == 0, err
    run = runs / "toy" / "a"
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["chosen_epoch"] == {
        "epoch": 1,
        "of": 3,
        "chosen_on": "validation",
        "monitor": "learning_rate",
    }
    assert (
        metrics["last_epoch"]["epoch"] == 3
        and 0 <= metrics["last_epoch"]["validation"]["accuracy"] <= 1
    )
    assert "kept epoch 1 of 3" in out and "last epoch (3): validation accuracy" in out
    assert not (run / "checkpoints" / "last.weights.h5").exists()
    exported = keras.models.load_model(run / "export" / "model.keras")
    best = keras.models.load_model(run / "export" / "model.keras")
    best.load_weights(run / "checkpoints" / "best.weights.h5")
    for a, b in zip(exported.get_weights(), best.get_weights()):
        np.testing.assert_array_equal(a, b)


# ---------------------------------------------------------------------------- what a hostile user tries
def test_a_config_files_yaml_error_names_its_line_and_column(tmp_path):
    config = tmp_path / "bad.yaml"
    config.write_text("train:\n  epochs: 2\n  batch_size: [32\n")
    code, _, err = cli("train", TOY, "--config", str(config), "--runs-dir", str(tmp_path))
    assert code == 2 and f"keras-zoo: error: {config}:4:1: invalid YAML" in error_line(err)


def test_the_exists_hint_fits_the_runs_status(finished):
    runs, run, before = finished
    code, _, err = cli(
        "train", TOY, "--name", "a", "--runs-dir", str(runs), *FAST, "--set", "run.resume=auto"
    )
    line = error_line(err)
    assert (
        code == 2
        and "a finished run of this name is there; --overwrite replaces it" in line
        and "--resume" not in line
    )
    assert snapshot(run) == before


def test_texts_after_predicts_options_are_inputs_and_an_empty_preset_is_refused(finished):
    _, run, before = finished
    code, out, err = cli("predict", TOY, str(run), "--jsonl", "1,2", "0,0")
    assert code == 0, err
    assert [json.loads(line)["text"] for line in out.splitlines()] == ["1,2", "0,0"]
    result = cli_here("predict", TOY, str(run), "--bogus", "1,2")
    assert result.returncode == 2 and "unrecognized arguments: --bogus 1,2" in result.stderr
    code, _, err = cli("export", TOY, str(run), "--preset", "")
    assert code == 2 and "--preset: empty" in error_line(err)
    assert snapshot(run) == before  # the run's export/ untouched


# Runs a command with the folder $1 mounted read-only, in a mount namespace of its own (nothing
# outside the command sees it): root writes anywhere that permissions alone forbid, not there.
READ_ONLY = 'mount --bind "$1" "$1" && mount -o remount,bind,ro "$1" "$1" && shift && exec "$@"'


@pytest.fixture
def read_only_runs(tmp_path):
    """A finished toy run in a runs folder, and how to run a command that sees that folder
    read-only; skips where mount namespaces are not allowed (not root, or a locked-down container)."""
    import shutil

    probe = (
        subprocess.run(
            ["unshare", "-m", "sh", "-c", READ_ONLY, "sh", str(tmp_path), "true"],
            capture_output=True,
            text=True,
        )
        if shutil.which("unshare")
        else None
    )
    if probe is None or probe.returncode != 0:
        pytest.skip(
            "needs `unshare -m` and mount (root in a mount namespace) to make a read-only folder: "
            + (probe.stderr.strip() if probe else "no unshare")
        )
    runs = tmp_path / "runs"
    code, _, err = cli("train", TOY, "--name", "a", "--runs-dir", str(runs), *FAST)
    assert code == 0, err

    def command(*args: str, **popen) -> list[str]:
        return [
            "unshare",
            "-m",
            "sh",
            "-c",
            READ_ONLY,
            "sh",
            str(runs),
            sys.executable,
            "-m",
            "keras_zoo_cli",
            *args,
        ]

    return runs, runs / "toy" / "a", command


@pytest.mark.parametrize(
    "command, where",
    [
        (["evaluate", TOY, "{run}"], "{run}: cannot write there"),
        (["export", TOY, "{run}"], "{run}/export: cannot write there"),
        (["export", TOY, "{run}", "--preset", "{runs}/preset"], "{runs}: cannot write there"),
        (["runs", "--runs-dir", "{runs}", "--delete", "toy/a"], "{runs}/toy cannot be written"),
        (["tune", TOY, "--dir", "{runs}/toy/search", "--set", "tuning.max_trials=1"], "{runs}/toy"),
        (["train", TOY, "--runs-dir", "{runs}", "--name", "b"], "{runs}/toy: cannot write there"),
    ],
)
def test_every_writing_command_on_a_read_only_run_is_one_line_and_changes_nothing(
    read_only_runs, command, where
):
    runs, run, read_only = read_only_runs
    before = snapshot(runs)
    args = [a.format(run=run, runs=runs) for a in command]
    result = subprocess.run(read_only(*args), cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2, result.stderr[-2000:]
    assert where.format(run=run, runs=runs) in error_line(result.stderr)
    assert snapshot(runs) == before


def test_tensorboard_serves_a_read_only_runs_folder(read_only_runs):
    runs, _, read_only = read_only_runs
    process = subprocess.Popen(
        read_only("tensorboard", str(runs)),
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # xdist workers ignore SIGINT and children inherit that (Python then installs no
        # KeyboardInterrupt handler): give this one the terminal's default, as Ctrl-C would find it.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        line = process.stdout.readline()  # waits for the URL line, not for a time
        assert line.startswith("TensorBoard ") and " at http://127.0.0.1:" in line, (
            process.stderr.read()[-2000:]
        )
        process.send_signal(signal.SIGINT)
        out, _ = process.communicate(timeout=60)  # drains stderr too, so the exit cannot block
        assert process.returncode == 0 and "TensorBoard stopped" in out
    finally:
        process.kill()
