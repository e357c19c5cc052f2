"""Training on several devices or machines: the `tf.distribute` strategy of a run, and what each
process of a cluster writes. The engine (recipes/engine/lifecycle.py) opens `Distribution.strategy`'s scope
around building, compiling and fitting every recipe's model.

`train.distribute`:
- `none`: one device (TensorFlow's default strategy);
- `mirrored`: `MirroredStrategy` over this machine's GPUs (its logical CPU devices where it has
  no GPU: that is how the tests run it);
- `multi_worker`: `MultiWorkerMirroredStrategy` over the processes that `TF_CONFIG` names (one per
  machine or per GPU; `keras-zoo train --workers N` starts N on this machine, recipes/engine/launch.py);
- `auto`: `multi_worker` when `TF_CONFIG` names a cluster, `mirrored` with two or more local GPUs,
  else `none`.

`train.batch_size` is the global batch: each of R replicas computes global / R examples of every
batch, so a length-grouped text batch keeps one padded length across the replicas, and the loss, the
gradients and the learning rate schedule are those of one device (`train.scale_learning_rate:
linear` multiplies the rate by R instead).

In a cluster only the chief (task `chief`, else worker 0) writes the run: the others train in a
temporary copy of the run's training state, which they delete when they finish. Every process
runs the same callbacks (best checkpoint, early stopping, resume state), so all of them take the
same decisions and stay in step; after training the chief alone evaluates and exports, with a
copy of the model outside the strategy (zoo/heads.py `inference_copy`).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import tensorflow as tf

from recipes.engine.run_dir import RunDir, RunPlan
from zoo import keras_compat
from zoo.errors import UserError


@dataclass(frozen=True)
class Cluster:
    """This process's place in the cluster that `TF_CONFIG` describes (`tasks == 0`: no cluster)."""

    tasks: int = 0
    task_type: str = "worker"
    index: int = 0
    has_chief: bool = False  # the cluster has a `chief` task; else worker 0 is the chief

    @property
    def is_chief(self) -> bool:
        return self.task_type == "chief" or (
            self.task_type == "worker" and self.index == 0 and not self.has_chief
        )


def cluster_from_environment(environ: Mapping[str, str] = os.environ) -> Cluster:
    """Parse `TF_CONFIG` (set by Kubeflow's TFJob, by `keras-zoo train --workers`, or by hand)."""
    raw = environ.get("TF_CONFIG", "").strip()
    if not raw:
        return Cluster()
    try:
        spec = json.loads(raw)
        cluster, task = spec.get("cluster") or {}, spec.get("task") or {}
        task_type, index = str(task.get("type", "")), int(task.get("index", 0))
    except (ValueError, AttributeError, TypeError) as e:
        raise UserError(
            f"TF_CONFIG: not a cluster description ({e}); expected "
            '{"cluster": {"worker": ["host:port", ...]}, "task": {"type": "worker", "index": 0}}'
        ) from None
    unsupported = sorted(set(cluster) - {"chief", "worker"})
    if unsupported:
        raise UserError(
            f"TF_CONFIG: task types {', '.join(unsupported)} are not supported (keras-zoo trains with "
            "MultiWorkerMirroredStrategy: 'chief' and 'worker' tasks only)"
        )
    if task_type not in cluster or not 0 <= index < len(cluster[task_type]):
        raise UserError(
            f"TF_CONFIG: task {task_type!r} {index} is not in the cluster {json.dumps(cluster)}"
        )
    return Cluster(
        sum(len(hosts) for hosts in cluster.values()),
        task_type,
        index,
        has_chief="chief" in cluster,
    )


def resolve_distribute(setting: str, local_gpus: int, cluster: Cluster) -> str:
    """The strategy kind for `train.distribute` (see the module docstring)."""
    if setting == "auto":
        if cluster.tasks:
            return "multi_worker"
        return "mirrored" if local_gpus >= 2 else "none"
    if setting == "multi_worker" and not cluster.tasks:
        raise UserError(
            "train.distribute: multi_worker needs TF_CONFIG naming the cluster "
            "(keras-zoo train --workers N sets it for N processes on this machine)"
        )
    if setting in ("none", "mirrored") and cluster.tasks > 1:
        raise UserError(
            f"train.distribute: {setting}, but TF_CONFIG names a cluster of {cluster.tasks} processes; "
            "use auto or multi_worker (or unset TF_CONFIG)"
        )
    return setting


@dataclass
class Distribution:
    """How this process trains: the strategy, its replica count, and its role in a cluster."""

    kind: str
    strategy: Any  # tf.distribute.Strategy
    cluster: Cluster = field(default_factory=Cluster)
    scratch: Path | None = None  # a non-chief worker's temporary run directory

    @property
    def replicas(self) -> int:
        return int(self.strategy.num_replicas_in_sync)

    @property
    def is_chief(self) -> bool:
        return self.kind != "multi_worker" or self.cluster.is_chief

    def describe(self) -> str:
        if self.kind == "none":
            return ""
        where = (
            f"{self.cluster.tasks} processes, this one {self.cluster.task_type} {self.cluster.index}"
            if self.kind == "multi_worker"
            else ", ".join(self.strategy.extended.worker_devices)
        )
        return f"training with {type(self.strategy).__name__}: {self.replicas} replicas ({where})"


@contextlib.contextmanager
def distribution(setting: str, plan: RunPlan, local_gpus: int) -> Iterator[Distribution]:
    """Create the strategy for `train.distribute` (before any other TensorFlow op, as
    `MultiWorkerMirroredStrategy` requires). A non-chief worker gets a temporary run directory,
    seeded with the chief's training state when the run resumes and deleted at the end; then every
    process waits for the others, so the chief writes nothing before all have read the run."""

    cluster = cluster_from_environment()
    kind = resolve_distribute(setting, local_gpus, cluster)
    if kind == "none":
        yield Distribution(kind, tf.distribute.get_strategy())
        return

    if kind == "mirrored":
        devices = tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("CPU")
        with keras_compat.distributed_fit():
            yield Distribution(kind, _strategy("mirrored", tuple(d.name for d in devices)))
        return
    setup = Distribution(kind, _strategy("multi_worker", ()), cluster)
    if not cluster.is_chief:
        setup.scratch = worker_scratch_path(plan, cluster)
        shutil.rmtree(setup.scratch, ignore_errors=True)  # left by a killed worker of this run
        _copy_training_state(plan, RunDir(setup.scratch / "run"))
    try:
        barrier(setup.strategy)
        with keras_compat.distributed_fit():
            yield setup
    finally:
        if setup.scratch is not None:
            shutil.rmtree(setup.scratch, ignore_errors=True)


@functools.cache
def _strategy(kind: str, devices: tuple[str, ...]):
    """One strategy of a kind per process, reused by its later runs: a second `MirroredStrategy`
    numbers its collective ops as the first did, and TensorFlow then mixes them up ("Shape
    mismatch in the collective instance 100"), and a process can join only one cluster."""

    if kind == "mirrored":
        return tf.distribute.MirroredStrategy(list(devices))
    return tf.distribute.MultiWorkerMirroredStrategy()


def barrier(strategy) -> None:
    """Return when every process of the strategy has called it (an all-reduce of one number)."""

    strategy.reduce("SUM", strategy.run(lambda: tf.constant(1.0)), axis=None)


def worker_scratch_path(plan: RunPlan, cluster: Cluster) -> Path:
    """A worker's temporary directory: named after the run and the worker, so that the next
    start of that worker replaces what a killed one left."""
    digest = hashlib.sha1(str(plan.final.resolve()).encode()).hexdigest()[:12]
    return Path(tempfile.gettempdir()) / f"keras-zoo-{digest}-{cluster.task_type}{cluster.index}"


def _copy_training_state(plan: RunPlan, scratch: RunDir) -> None:
    """A worker's start: an empty run, or (resuming) a copy of the chief's finished phases, best
    checkpoint, history and resume state, so that it continues from the same epoch."""
    (scratch.path / "checkpoints").mkdir(parents=True)
    (scratch.path / "export").mkdir()
    if not plan.resume:
        return
    chief = RunDir(plan.work)
    for name in ("checkpoints", "backup"):
        if (chief.path / name).is_dir():
            shutil.copytree(chief.path / name, scratch.path / name, dirs_exist_ok=True)
    if chief.history.is_file():
        shutil.copy2(chief.history, scratch.history)


@contextlib.contextmanager
def scratch_run(directory: Path, tensorboard: bool) -> Iterator[Any]:
    """A non-chief worker's stand-in for `run_dir.open_run_for_writing`: the same `.run`, in its
    temporary directory, with no status, lock or swap (the chief keeps those)."""

    yield SimpleNamespace(run=RunDir(directory / "run", tensorboard=tensorboard))


def shard_by_data(dataset):
    """Each replica takes its part of every global batch. The datasets are built in memory, so
    there are no files to shard by (TensorFlow's AUTO policy would fall back to this, with a warning)."""

    if dataset is None:
        return None
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return dataset.with_options(options)


def scaled_learning_rate(learning_rate: float, rule: str, replicas: int) -> float:
    """`train.scale_learning_rate`: `none` keeps the rate (the global batch is the configured one),
    `linear` multiplies it by the replica count (for a global batch grown with the replicas)."""
    return learning_rate * replicas if rule == "linear" else learning_rate
