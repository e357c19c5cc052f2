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

NATIVE_LOG = re.compile(
    r"^[IWEF]\d{4} |absl::InitializeLog|cudart_stub|cuInit|oneDNN|cpu_feature_guard", re.M
)
ENV = {
    k: v for k, v in os.environ.items() if k not in ("TF_CPP_MIN_LOG_LEVEL", "KERAS_ZOO_VERBOSE")
}


def demo_training(tiny_bert, runs, batch_size: int, *settings: str) -> list[str]:
    """`keras-zoo train sentiment` on the bundled demo set (300 reviews) with the tiny backbone."""
    return [
        sys.executable,
        "-m",
        "keras_zoo_cli",
        "train",
        "sentiment",
        "--runs-dir",
        str(runs),
        "--name",
        "demo",
        "--set",
        f"model.backbone={tiny_bert}",
        "--set",
        "train.epochs=1",
        "--set",
        f"train.batch_size={batch_size}",
        *settings,
    ]


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
    # the bar is the point
    command = demo_training(tiny_bert, tmp_path / "runs", 4, "--set", "run.export=false")
    process = subprocess.Popen(
        command, stdin=child, stdout=child, stderr=child, cwd=ROOT, env=ENV, close_fds=True
    )
    os.close(child)
    try:
        text = read_terminal(master, process)
    finally:
        os.close(master)
    assert process.returncode == 0, text[-3000:]
    # Keras's bar is drawn with ANSI colours and redraws its line each update
    plain = re.sub(r"\x1b\[[0-9;]*[A-Za-z]", "", text)
    steps = {int(done) for done in re.findall(r"(\d+)/75 ━", plain)}
    assert len({s for s in steps if s < 75}) >= 2, text[-2000:]  # it moved during the epoch...
    assert 75 in steps  # ...and reached the end
    assert "validation metrics" in plain


def test_a_pipe_gets_one_line_per_epoch_and_no_native_log_or_warning(tiny_bert, tmp_path):
    """Training, then predict and evaluate on the run, each in a pipe: nothing but their own lines."""
    result = subprocess.run(
        demo_training(tiny_bert, tmp_path / "runs", batch_size=16),
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=ENV,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    output = result.stdout + result.stderr
    assert not NATIVE_LOG.search(output), output[:3000]
    assert "Warning" not in output, output[:3000]
    assert "\r" not in result.stdout and "━" not in result.stdout  # no bar in logs
    assert re.search(r"^19/19 - \d+s .* - val_accuracy: ", result.stdout, re.M)  # the epoch's line
    run = tmp_path / "runs" / "sentiment" / "demo"
    for command in (
        ["predict", "sentiment", str(run), "a lovely film", "--jsonl"],
        ["evaluate", "sentiment", str(run)],
    ):
        result = subprocess.run(
            [sys.executable, "-m", "keras_zoo_cli", *command],
            capture_output=True,
            text=True,
            cwd=ROOT,
            env=ENV,
            timeout=600,
        )
        assert result.returncode == 0, result.stderr[-3000:]
        assert not NATIVE_LOG.search(result.stdout + result.stderr), (
            result.stdout + result.stderr
        )[:3000]
        assert result.stderr == "", result.stderr[:3000]


# A program that installs the filter, then writes native-looking lines: harmless ones and real ones,
# at start-up and mid-run (after the test answers on stdin), then ends as argv[1] says.
FILTERED_PROGRAM = r"""
import os, signal, sys
from zoo.runtime import NO_GPU_NATIVE_LOG, prepare_command_process
os.environ.pop("KERAS_ZOO_VERBOSE", None) if sys.argv[2] == "quiet" else None
prepare_command_process()
os.write(2, b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n")
os.write(2, b"E0000 00:00:1.0 1 cuda_platform.cc:52] failed call to cuInit: UNKNOWN ERROR (303)\n")
os.write(2, b"E0000 00:00:1.0 1 something.cc:1] a real error at start-up\n")
sys.stdin.readline()  # the test has seen the real error: the filter passes lines on as they come
os.write(2, b"E0000 00:00:1765.5 77 util.cc:131] oneDNN supports DT_INT64 only on platforms with AVX-512. "
            b"Falling back to the default Eigen-based implementation if present.\n")
os.write(2, b"E0000 00:00:1.0 1 other.cc:9] a real error mid-run\n")
os.write(2, b"a line without its end")
if sys.argv[1] == "kill":
    os.kill(os.getpid(), signal.SIGKILL)
raise RuntimeError("a traceback at exit")
"""


def run_filtered_program(end: str, verbose: bool = False) -> tuple[str, str]:
    """(what stderr showed before the test answered, all of stderr)."""
    env = {**ENV, "PYTHONPATH": str(ROOT), **({"KERAS_ZOO_VERBOSE": "1"} if verbose else {})}
    process = subprocess.Popen(
        [sys.executable, "-c", FILTERED_PROGRAM, end, "verbose" if verbose else "quiet"],
        stdin=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        cwd=ROOT,
    )
    early = b""
    while b"a real error at start-up" not in early:  # waits for the line itself, not for a time
        chunk = os.read(process.stderr.fileno(), 4096)
        assert chunk, early.decode()
        early += chunk
    process.stdin.write(b"go\n")
    process.stdin.close()
    rest = process.stderr.read()
    process.wait(timeout=60)
    return early.decode(), (early + rest).decode()


def test_native_log_lines_are_dropped_wherever_they_come_and_everything_else_passes_as_it_comes():
    early, err = run_filtered_program("traceback")
    assert "cuInit" not in early and "absl" not in early  # dropped at start-up...
    assert "oneDNN" not in err and "cuInit" not in err and "absl" not in err  # ...and mid-run
    assert "a real error mid-run" in err and "a line without its end" in err
    assert "Traceback (most recent call last)" in err and "RuntimeError: a traceback at exit" in err


def test_the_last_lines_before_a_kill_still_come_out():
    _, err = run_filtered_program("kill")
    assert "a real error mid-run" in err and "a line without its end" in err and "oneDNN" not in err


def test_verbose_shows_every_native_line():
    _, err = run_filtered_program("traceback", verbose=True)
    assert "cuInit" in err and "absl::InitializeLog" in err and "oneDNN supports DT_INT64" in err


def test_a_progress_bar_line_without_its_end_is_passed_on_at_once():
    from zoo.runtime import NO_GPU_NATIVE_LOG, forward_filtered

    source, sink = os.pipe()
    target_read, target = os.pipe()
    pid = os.fork()
    if pid == 0:  # the filter, as filter_native_logs runs it
        os.close(sink)
        forward_filtered(source, target, NO_GPU_NATIVE_LOG)
        os._exit(0)
    os.close(source)
    os.close(target)
    os.write(sink, b"tokenising:  40%|####      | 2/5\r")
    # not held for a line end
    assert os.read(target_read, 4096) == b"tokenising:  40%|####      | 2/5\r"
    os.write(sink, b"E0000 cpu_feature_guard.cc:1] harmless\nkept\n")
    os.close(sink)
    rest = b""
    while chunk := os.read(target_read, 4096):
        rest += chunk
    os.waitpid(pid, 0)
    assert rest == b"kept\n"


def test_slow_steps_get_a_delayed_bar_on_a_terminal_and_nothing_in_logs(monkeypatch):
    from zoo import progress

    items = range(3)
    monkeypatch.setattr(progress, "on_terminal", lambda: False)
    assert progress.progress(items, total=3) is items and progress.predict_callbacks(10) == []
    monkeypatch.setattr(progress, "on_terminal", lambda: True)
    bar = progress.progress(items, total=3, desc="tokenising")
    # appears only after DELAY_S seconds
    assert list(bar) == [0, 1, 2] and bar.delay == progress.DELAY_S > 0
    assert len(progress.predict_callbacks(10)) == 1
