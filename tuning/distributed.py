"""Distributed search with Keras Tuner's chief/worker mode.

Keras Tuner reads three environment variables: `KERASTUNER_TUNER_ID` ("chief" for the chief),
`KERASTUNER_ORACLE_IP` and `KERASTUNER_ORACLE_PORT`. `keras-zoo tune --role chief|worker` sets
them from `--host` / `--port` (default 127.0.0.1:8000) unless they are set already, so the same
command runs on every host; all hosts share the search directory.

The chief serves the oracle over gRPC. Keras Tuner's channel has no authentication and no
encryption: anyone who reaches the port can read and change the search. The chief binds
127.0.0.1 unless told otherwise; bind another address only on a network you trust.

Each worker touches a heartbeat file in the search directory. The chief serves with Keras Tuner's
servicer but its own loop: every second it ends the trials of workers whose heartbeat is older
than `tuning.worker_timeout_s` (see `SearchOracleMixin.reap`), which Keras Tuner's loop never does,
so one dead worker used to hang the search forever.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from recipes.engine.launch import die_with_parent, local_gpu_count, worker_environments
from tuning.common import SearchDir
from zoo.errors import UserError

DEFAULT_HOST, DEFAULT_PORT = "127.0.0.1", 8000
HEARTBEAT_S = 2.0


def set_role(role: str, host: str | None, port: int | None) -> None:
    """Set Keras Tuner's environment for `role` (chief or worker); flags win over the environment."""
    os.environ["KERASTUNER_ORACLE_IP"] = host or os.environ.get(
        "KERASTUNER_ORACLE_IP", DEFAULT_HOST
    )
    os.environ["KERASTUNER_ORACLE_PORT"] = str(
        port or os.environ.get("KERASTUNER_ORACLE_PORT", DEFAULT_PORT)
    )
    if role == "chief":
        os.environ["KERASTUNER_TUNER_ID"] = "chief"
    elif "chief" in os.environ.get("KERASTUNER_TUNER_ID", "chief"):
        os.environ["KERASTUNER_TUNER_ID"] = f"worker-{socket.gethostname()}-{os.getpid()}"


def is_chief() -> bool:
    return os.environ.get("KERASTUNER_TUNER_ID") == "chief" and "KERASTUNER_ORACLE_IP" in os.environ


# --------------------------------------------------------------------------------------- liveness
def heartbeat_file(search: SearchDir, tuner_id: str) -> Path:
    return search.workers / f"{tuner_id}.alive"


@contextlib.contextmanager
def heartbeat(search: SearchDir, tuner_id: str) -> Iterator[None]:
    """Touch this worker's heartbeat file every couple of seconds while the block runs."""
    path = heartbeat_file(search, tuner_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    stop = threading.Event()

    def beat() -> None:
        while not stop.is_set():
            path.touch()
            stop.wait(HEARTBEAT_S)

    thread = threading.Thread(target=beat, daemon=True, name="keras-zoo-heartbeat")
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
        path.unlink(missing_ok=True)


def serve(oracle, search: SearchDir, worker_timeout_s: float) -> None:
    """Serve `oracle` to the workers until every trial has ended and every worker has gone."""
    from tuning.keras_tuner_compat import make_oracle_server, search_over

    address = f"{os.environ['KERASTUNER_ORACLE_IP']}:{os.environ['KERASTUNER_ORACLE_PORT']}"
    server, servicer = make_oracle_server(oracle)
    try:
        bound = server.add_insecure_port(address)
    except RuntimeError:
        bound = 0
    if not bound:
        raise UserError(f"chief: cannot listen on {address} (port in use?); choose another --port")
    server.start()
    print(
        f"chief: serving the search on {address} (unauthenticated gRPC: keep it on a trusted network)",
        flush=True,
    )
    first_seen: dict[str, float] = {}

    def is_alive(tuner_id: str) -> bool:
        now = time.time()
        path = heartbeat_file(search, tuner_id)
        last = path.stat().st_mtime if path.exists() else first_seen.setdefault(tuner_id, now)
        return now - last < worker_timeout_s

    try:
        while True:
            time.sleep(0.5)
            for tuner_id in oracle.reap(is_alive):
                print(
                    f"chief: worker {tuner_id} stopped answering; its trial goes back to the queue",
                    flush=True,
                )
            if search_over(oracle, servicer):
                break
    finally:
        server.stop(grace=2)


@contextlib.contextmanager
def local_workers(recipe: str, search: SearchDir, count: int) -> Iterator[list[subprocess.Popen]]:
    """Start `count` workers on this machine (one GPU each where there are GPUs) for the block."""
    processes = []
    gpus = local_gpu_count() if count else 0
    for i, env in enumerate(worker_environments(count, gpus, os.environ)):
        env["KERASTUNER_TUNER_ID"] = f"worker{i}"
        log = search.path / "workers" / f"worker{i}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        command = [
            sys.executable,
            "-m",
            "keras_zoo_cli",
            "tune",
            recipe,
            "--role",
            "worker",
            "--dir",
            str(search.path),
            "--host",
            env["KERASTUNER_ORACLE_IP"],
            "--port",
            env["KERASTUNER_ORACLE_PORT"],
        ]
        with log.open("a") as out:
            processes.append(
                subprocess.Popen(
                    command,
                    env=env,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    preexec_fn=die_with_parent,
                )
            )
    if count:
        print(f"started {count} local workers (logs in {search.path / 'workers'})", flush=True)
    try:
        yield processes
    finally:
        for process in processes:
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
