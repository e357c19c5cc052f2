"""What a user sees while training: a live progress bar on a terminal; in a pipe (logs, CI) one line
per epoch, with no TensorFlow C++ log line and no Python warning."""

from __future__ import annotations

import os
import pty
import re
import select
import subprocess
import sys
import time

from tests.conftest import ROOT

NATIVE_LOG = re.compile(r"^[IWEF]\d{4} |absl::InitializeLog|cudart_stub|cuInit|oneDNN|cpu_feature_guard", re.M)
ENV = {k: v for k, v in os.environ.items() if k not in ("TF_CPP_MIN_LOG_LEVEL", "KERAS_ZOO_VERBOSE")}


def demo_training(tiny_bert, runs, batch_size: int, *settings: str) -> list[str]:
    """`keras-zoo train sentiment` on the bundled demo set (300 reviews) with the tiny backbone."""
    return [sys.executable, "-m", "keras_zoo_cli", "train", "sentiment", "--runs-dir", str(runs), "--name", "demo",
            "--set", f"model.backbone={tiny_bert}", "--set", "train.epochs=1",
            "--set", f"train.batch_size={batch_size}", *settings]


def read_terminal(master: int, process: subprocess.Popen, timeout: float = 600) -> str:
    """Everything the process writes to its terminal until it exits."""
    output, deadline = b"", time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([master], [], [], 1.0)
        if ready:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: the process closed its side
                break
            if not chunk:
                break
            output += chunk
        elif process.poll() is not None:
            break
    process.wait(timeout=60)
    return output.decode(errors="replace")


def test_a_terminal_sees_the_progress_bar_move_within_the_epoch(tiny_bert, tmp_path):
    master, child = pty.openpty()
    command = demo_training(tiny_bert, tmp_path / "runs", 4, "--set", "run.export=false")  # the bar is the point
    process = subprocess.Popen(command, stdin=child, stdout=child, stderr=child, cwd=ROOT, env=ENV, close_fds=True)
    os.close(child)
    try:
        text = read_terminal(master, process)
    finally:
        os.close(master)
    assert process.returncode == 0, text[-3000:]
    plain = re.sub(r"\x1b\[[0-9;]*[A-Za-z]", "", text)  # Keras's bar is drawn with ANSI colours
    steps = {int(done) for done in re.findall(r"(\d+)/75 ━", plain)}  # and redraws its line each update
    assert len({s for s in steps if s < 75}) >= 2, text[-2000:]  # it moved during the epoch...
    assert 75 in steps  # ...and reached the end
    assert "validation metrics" in plain


def test_a_pipe_gets_one_line_per_epoch_and_no_native_log_or_warning(tiny_bert, tmp_path):
    result = subprocess.run(demo_training(tiny_bert, tmp_path / "runs", batch_size=16), capture_output=True,
                            text=True, cwd=ROOT, env=ENV, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    output = result.stdout + result.stderr
    assert not NATIVE_LOG.search(output), output[:3000]
    assert "Warning" not in output, output[:3000]
    assert "\r" not in result.stdout and "━" not in result.stdout  # no bar in logs
    assert re.search(r"^19/19 - \d+s .* - val_accuracy: ", result.stdout, re.M)  # the epoch's line


def test_native_log_lines_are_filtered_and_everything_else_is_kept(capfd):
    from zoo.runtime import HARMLESS_NATIVE_LOG, NO_GPU_NATIVE_LOG, filtered_native_logs

    assert not HARMLESS_NATIVE_LOG.search("failed call to cuInit")  # kept where there is a GPU
    with filtered_native_logs(NO_GPU_NATIVE_LOG):
        os.write(2, b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n")
        os.write(2, b"E0000 00:00:1.0 1 cuda_platform.cc:52] failed call to cuInit: UNKNOWN ERROR (303)\n")
        os.write(2, b"E0000 00:00:1.0 1 something.cc:1] a real error\n")
        print("Traceback (most recent call last): kept", file=sys.stderr)
    err = capfd.readouterr().err
    assert "a real error" in err and "Traceback (most recent call last): kept" in err
    assert "cuInit" not in err and "absl" not in err


def test_slow_steps_get_a_delayed_bar_on_a_terminal_and_nothing_in_logs(monkeypatch):
    from zoo import progress

    items = range(3)
    monkeypatch.setattr(progress, "on_terminal", lambda: False)
    assert progress.progress(items, total=3) is items and progress.predict_callbacks(10) == []
    monkeypatch.setattr(progress, "on_terminal", lambda: True)
    bar = progress.progress(items, total=3, desc="tokenising")
    assert list(bar) == [0, 1, 2] and bar.delay == progress.DELAY_S > 0  # appears only after DELAY_S seconds
    assert len(progress.predict_callbacks(10)) == 1
