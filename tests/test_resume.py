"""Kill training with SIGKILL during epoch 2, rerun with --resume: it continues from epoch 2."""

import csv
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from tests.conftest import ROOT, make_reviews, run_cli, write_jsonl


def history_rows(path):
    if not path.exists():
        return []
    with path.open() as f:
        return list(csv.DictReader(f))


@pytest.mark.parametrize(
    "cpu_bf16, precision", [("emulated", "float32"), ("native", "mixed_bfloat16")]
)
def test_sigkill_in_epoch_two_then_resume_continues_from_epoch_two(
    tiny_bert, tmp_path, cpu_bf16, precision
):
    """At both resolutions of `train.precision: auto` (KERAS_ZOO_CPU_BF16), whatever this CPU has."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "KERAS_ZOO_CPU_BF16": cpu_bf16}
    train = write_jsonl(tmp_path / "train.jsonl", make_reviews(1200, seed=3))  # 300 steps an epoch
    dev = write_jsonl(tmp_path / "dev.jsonl", make_reviews(40, seed=4))
    args = [
        "train",
        "sentiment",
        "--name",
        "r",
        "--runs-dir",
        str(tmp_path / "runs"),
        "--set",
        f"model.backbone={tiny_bert}",
        "--set",
        f"data.train={train}",
        "--set",
        f"data.validation={dev}",
        "--set",
        "train.epochs=2",
        "--set",
        "train.batch_size=4",
        "--set",
        "train.early_stopping_patience=0",
        "--set",
        "run.export=false",
    ]
    run = tmp_path / "runs" / "sentiment" / "r"
    process = subprocess.Popen(
        [sys.executable, "-m", "keras_zoo_cli", *args],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    deadline = time.time() + 300
    while not history_rows(run / "history.csv") and time.time() < deadline:
        assert process.poll() is None, "training ended before epoch 1 finished"
        time.sleep(0.01)
    # Epoch 1's row is written after its resume state (recipes/engine/training.py orders the callbacks so):
    # killed now, the run is in epoch 2 (300 steps), or between 1 and 2.
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert [r["epoch"] for r in history_rows(run / "history.csv")] == ["0"], (
        "the kill did not land in epoch 2"
    )
    assert (run / "backup").exists() and not (run / "metrics.json").exists()

    resumed = run_cli(*args, "--resume", env={"KERAS_ZOO_CPU_BF16": cpu_bf16})
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert json.loads((run / "run.json").read_text())["runtime"]["precision"] == precision
    assert "Skipping variable loading" not in resumed.stderr  # optimizer state restored too
    assert "Epoch 1/2" not in resumed.stdout and "Epoch 2/2" in resumed.stdout
    assert [r["epoch"] for r in history_rows(run / "history.csv")] == ["0", "1"]
    assert (run / "metrics.json").exists() and not (run / "backup").exists()
    # run.export=false: the model predict and evaluate load, without the deployable SavedModel
    assert (run / "export" / "model.keras").exists() and not (
        run / "export" / "saved_model"
    ).exists()


def test_resume_without_a_run_and_overwrite_together_are_errors(tmp_path):
    result = run_cli(
        "train", "sentiment", "--name", "none", "--runs-dir", str(tmp_path), "--resume"
    )
    assert result.returncode == 2 and "nothing to resume" in result.stderr
    result = run_cli("train", "sentiment", "--resume", "--overwrite")
    assert result.returncode == 2 and "not allowed with argument" in result.stderr


def test_image_run_killed_in_the_finetuning_phase_resumes_there(tiny_image_backbone, tmp_path):
    from tests.conftest import make_image_folder

    photos = make_image_folder(tmp_path / "photos", 150, seed=2)  # 150 steps an epoch
    args = [
        "train",
        "image_classification",
        "--name",
        "r",
        "--runs-dir",
        str(tmp_path / "runs"),
        "--set",
        f"model.backbone={tiny_image_backbone}",
        "--set",
        f"data.train={photos}",
        "--set",
        "train.head_epochs=2",
        "--set",
        "train.epochs=3",
        "--set",
        "train.batch_size=2",
        "--set",
        "run.export=false",
    ]
    run = tmp_path / "runs" / "image_classification" / "r"
    process = subprocess.Popen(
        [sys.executable, "-m", "keras_zoo_cli", *args],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
    )
    deadline = time.time() + 400
    # head done, 1 fine-tuning epoch
    while len(history_rows(run / "history.csv")) < 3 and time.time() < deadline:
        assert process.poll() is None, "training ended early"
        time.sleep(0.01)
    # Epoch 3's row is written after its resume state (recipes/engine/training.py orders the callbacks so):
    # killed now, the run is in epoch 4, or between 3 and 4.
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert [r["epoch"] for r in history_rows(run / "history.csv")] == ["0", "1", "2"], (
        "the kill missed epoch 4"
    )
    assert (run / "checkpoints" / "phase0-head.done.json").exists()
    assert (run / "backup" / "finetune").exists()

    resumed = run_cli(*args, "--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "Skipping variable loading" not in resumed.stderr
    started = [line.split()[1] for line in resumed.stdout.splitlines() if line.startswith("Epoch ")]
    # neither the head phase nor the finished fine-tuning epoch again
    assert started == [
        "4/5",
        "5/5",
    ]
    assert [r["epoch"] for r in history_rows(run / "history.csv")] == ["0", "1", "2", "3", "4"]
    assert (run / "metrics.json").exists() and not (run / "backup").exists()
