"""Start a real TensorBoard server over a log directory and read it through its HTTP API.

Used by tests that check what TensorBoard (and its HParams plugin) shows for the logs we write.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Sessions written by `hp.hparams` alone have no end info, so their status is STATUS_UNKNOWN;
# the plugin drops every session whose status is not listed here.
ALL_STATUSES = ["STATUS_UNKNOWN", "STATUS_SUCCESS", "STATUS_FAILURE", "STATUS_RUNNING"]


@dataclass
class TensorBoardServer:
    """A running TensorBoard at `url` (e.g. "http://127.0.0.1:40123")."""

    url: str
    process: subprocess.Popen

    def get_json(self, path: str, **params: str) -> Any:
        """GET `path` (e.g. "/data/runs") with query `params` and decode the JSON reply."""
        query = "?" + urllib.parse.urlencode(params) if params else ""
        with urllib.request.urlopen(self.url + path + query, timeout=30) as reply:
            return json.loads(reply.read())

    def post_json(self, path: str, body: dict) -> Any:
        """POST `body` as JSON to `path` and decode the JSON reply."""
        # The Content-Type matters: a form-encoded body reaches the hparams plugin as empty.
        request = urllib.request.Request(
            self.url + path,
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=30) as reply:
            return json.loads(reply.read())


def _settled(server: TensorBoardServer) -> bool:
    """Default readiness: some runs are listed, and runs and scalar tags agree across two polls."""

    def snapshot() -> tuple:
        return (server.get_json("/data/runs"), server.get_json("/data/plugin/scalars/tags"))

    first = snapshot()
    time.sleep(0.5)
    return bool(first[0]) and snapshot() == first


@contextlib.contextmanager
def serve_tensorboard(
    logdir: Path,
    timeout: float = 60.0,
    load_fast: str = "auto",
    ready: Callable[[TensorBoardServer], bool] = _settled,
) -> Iterator[TensorBoardServer]:
    """Run TensorBoard on 127.0.0.1 (a free port) over `logdir` until the block exits.

    Waits until it answers and `ready(server)` holds; raises RuntimeError with its output otherwise.
    """
    # TensorBoard works without TensorFlow ("reduced feature set"): hiding it saves seconds of import.
    code = "import sys; sys.modules['tensorflow'] = None; from tensorboard.main import run_main; run_main()"
    with tempfile.TemporaryFile("w+") as log:
        process = subprocess.Popen(
            [
                sys.executable,
                "-c",
                code,
                "--logdir",
                str(logdir),
                "--host",
                "127.0.0.1",
                "--port",
                "0",
                "--reload_interval",
                "1",
                "--load_fast",
                load_fast,
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
        )
        try:
            yield _wait_until_ready(process, log, timeout, ready, logdir)
        finally:
            process.terminate()
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _wait_until_ready(
    process: subprocess.Popen,
    log: Any,
    timeout: float,
    ready: Callable[[TensorBoardServer], bool],
    logdir: Path,
) -> TensorBoardServer:
    """Find the URL TensorBoard prints, then poll `ready` until it holds or `timeout` passes."""
    deadline, server, problem = time.monotonic() + timeout, None, "no URL printed"
    while time.monotonic() < deadline and process.poll() is None:
        log.seek(0)
        match = re.search(r"TensorBoard \S+ at (http://127\.0\.0\.1:\d+)", log.read())
        if match:
            server = server or TensorBoardServer(match.group(1), process)
            try:
                if ready(server):
                    return server
                problem = "not ready"
            except OSError as error:  # URLError and HTTPError are OSErrors
                problem = repr(error)
        time.sleep(0.3)
    log.seek(0)
    raise RuntimeError(
        f"TensorBoard over {logdir} did not get ready ({problem}, "
        f"exit code {process.poll()}):\n" + log.read()[-4000:]
    )


def runs(server: TensorBoardServer) -> list[str]:
    """Run names (paths relative to the logdir, "/"-separated)."""
    return server.get_json("/data/runs")


def scalars(server: TensorBoardServer, run: str, tag: str) -> list[tuple[int, float]]:
    """(step, value) pairs of one scalar series, from the scalars plugin."""
    return [
        (step, value)
        for _, step, value in server.get_json("/data/plugin/scalars/scalars", run=run, tag=tag)
    ]


def hparams_experiment(server: TensorBoardServer) -> dict:
    """The HParams plugin's experiment: {"hparamInfos": [...], "metricInfos": [...], ...}."""
    return server.post_json("/data/plugin/hparams/experiment", {"experimentName": ""})


def hparams_sessions(server: TensorBoardServer) -> list[dict]:
    """The HParams plugin's session groups, each with "name", "hparams", "metricValues", "sessions"."""
    body = {
        "experimentName": "",
        "allowedStatuses": ALL_STATUSES,
        "colParams": [],
        "startIndex": 0,
        "sliceSize": 100_000,
    }
    return server.post_json("/data/plugin/hparams/session_groups", body)["sessionGroups"]


CHROMIUM_FLAGS = [  # headless, and nowhere but 127.0.0.1: no DNS, no proxy, no background traffic
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--hide-scrollbars",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-default-apps",
    "--disable-extensions",
    "--disable-domain-reliability",
    "--disable-client-side-phishing-detection",
    "--metrics-recording-only",
    "--no-pings",
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
    "--proxy-server=direct://",
    "--proxy-bypass-list=*",
    "--window-size=1400,900",
]


def screenshot(url: str, path: Path, profile: Path, budget_ms: int = 15000) -> None:
    """Headless Chromium's picture of `url` (after `budget_ms` of virtual time) at `path`; a test
    without Chromium is skipped (`make browser` installs it from Debian's packages: apt, as root
    or with sudo)."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if not browser:
        import pytest

        pytest.skip(
            "chromium is not installed (`make browser` installs it with apt, as root or with sudo)"
        )
    result = subprocess.run(
        [
            browser,
            *CHROMIUM_FLAGS,
            f"--user-data-dir={profile}",
            f"--screenshot={path}",
            f"--virtual-time-budget={budget_ms}",
            url,
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert path.exists(), result.stderr[-2000:]
