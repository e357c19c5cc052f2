"""Processes on this machine that train or search together: `keras-zoo train RECIPE --workers N`
starts N copies of the same command as a `MultiWorkerMirroredStrategy` cluster on 127.0.0.1
(`TF_CONFIG` names each one's task, recipes/engine/distribute.py), and `keras-zoo tune --workers N`
starts its search workers with `worker_environments` too.

Collective ops wait for every process: when one dies, the others would wait forever. So the
launcher watches them all, and when one ends with an error it stops the rest and fails in one line
naming it; the run is then `interrupted` and `--resume` continues it from its last finished epoch.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence

from zoo.errors import UserError

LOCALHOST = "127.0.0.1"
STOP_GRACE_S = 5.0


def free_port(host: str = LOCALHOST) -> int:
    """A TCP port free on `host` now (the OS picks it)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def die_with_parent() -> None:
    """In a child process: be killed when the parent dies (Linux), so that a killed launcher,
    search or worker leaves no orphan training on."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def worker_environments(
    count: int, gpus: int, base: Mapping[str, str], ports: Sequence[int] = ()
) -> list[dict]:
    """The environment of each of `count` local workers: one GPU each, round robin, where there are
    GPUs (`CUDA_VISIBLE_DEVICES`), and with `ports`, the `TF_CONFIG` of a cluster on 127.0.0.1."""
    environments = []
    for i in range(count):
        env = dict(base)
        if gpus:
            env["CUDA_VISIBLE_DEVICES"] = str(i % gpus)
        if ports:
            env["TF_CONFIG"] = json.dumps(
                {
                    "cluster": {"worker": [f"{LOCALHOST}:{p}" for p in ports]},
                    "task": {"type": "worker", "index": i},
                }
            )
        environments.append(env)
    return environments


def local_gpu_count() -> int:
    import tensorflow as tf

    return len(tf.config.list_physical_devices("GPU"))


def without_option(argv: Sequence[str], option: str) -> list[str]:
    """`argv` without `option VALUE` / `option=VALUE`."""
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == option:
            skip = True
        elif not arg.startswith(option + "="):
            out.append(arg)
    return out


def run_local_cluster(command: Sequence[str], count: int) -> None:
    """Run `command` as `count` workers of one cluster on this machine, each line of their output
    prefixed with `[worker i]`; return when all have succeeded, raise a one-line error when one fails."""
    if count < 1:
        raise UserError(f"--workers: must be at least 1, not {count}")
    if "TF_CONFIG" in os.environ:
        raise UserError(
            "--workers: TF_CONFIG is already set (this process is part of a cluster); "
            "run the command without --workers in each process of the cluster"
        )
    ports = [free_port() for _ in range(count)]
    processes, relays = [], []
    for i, env in enumerate(worker_environments(count, local_gpu_count(), os.environ, ports)):
        process = subprocess.Popen(
            list(command),
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            bufsize=1,
            preexec_fn=die_with_parent,
        )
        relays.append(
            threading.Thread(target=_relay, args=(process, f"[worker {i}] "), daemon=True)
        )
        relays[-1].start()
        processes.append(process)
    print(
        f"started {count} workers on {LOCALHOST}: pids {', '.join(str(p.pid) for p in processes)}, "
        f"ports {', '.join(map(str, ports))}; worker 0 is the chief",
        flush=True,
    )
    try:
        failed = _wait_all(processes)
    finally:
        _stop(processes)
        for relay in relays:  # the last lines of output, before the verdict
            relay.join(timeout=2)
    if failed is not None:
        i, code = failed
        how = (
            f"was killed by {signal.Signals(-code).name}"
            if code < 0
            else f"exited with status {code}"
        )
        raise UserError(
            f"worker {i} {how}; the other workers were stopped (continue with --resume)"
        )


def _relay(process: subprocess.Popen, prefix: str) -> None:
    for line in process.stdout:
        sys.stdout.write(prefix + line)
        sys.stdout.flush()


def _wait_all(processes: list[subprocess.Popen]) -> tuple[int, int] | None:
    """Wait until every process has ended; `(index, status)` of the first to fail, at once."""
    while True:
        codes = [p.poll() for p in processes]
        for i, code in enumerate(codes):
            if code not in (None, 0):
                return i, code
        if all(code == 0 for code in codes):
            return None
        time.sleep(0.2)


def _stop(processes: list[subprocess.Popen]) -> None:
    """SIGTERM the processes still running, SIGKILL those that outlive the grace period."""
    for process in processes:
        if process.poll() is None:
            process.terminate()
    deadline = time.monotonic() + STOP_GRACE_S
    for process in processes:
        try:
            process.wait(timeout=max(deadline - time.monotonic(), 0.1))
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
