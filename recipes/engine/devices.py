"""What this machine's devices are, and the precision and XLA setting that suit them.

`train.precision: auto` and `train.jit_compile: auto` resolve here, from plain facts about the
devices (`Devices`), so that every kind of device is unit-tested without owning it:

    >>> resolve_precision("auto", Devices(gpus=((8, 0), (8, 0))))
    'mixed_bfloat16'
    >>> resolve_precision("auto", Devices(gpus=((7, 5),)))
    'mixed_float16'
    >>> resolve_jit_compile("auto", Devices(cpu_flags=frozenset({"avx2"})))
    False
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass

import keras
import tensorflow as tf

from zoo.errors import UserError
from zoo.runtime import NATIVE_BF16, cpu_flags, cpu_model

# `auto` resolved as on a CPU with native bf16 (`native`) or without (`emulated`), whatever this
# CPU has: the test suite runs its precision-sensitive tests both ways on every machine, and a user
# can see how a run would train on the other kind of CPU. Emulated bf16 is slow but correct.
CPU_BF16_VARIABLE = "KERAS_ZOO_CPU_BF16"
CPU_BF16_CHOICES = ("native", "emulated")
# The CPU flags that decide a setting (oneDNN on or off: zoo/runtime.py; bf16: resolve_precision);
# a run records those its CPU has.
DECIDING_CPU_FLAGS = frozenset({"avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile"})

# XLA compiles one program per input shape; on GPUs of compute capability 7.0 and newer the fused
# kernels pay for that (mixed precision uses their tensor cores). On CPU the plain TensorFlow
# graphs were faster for these models (measured: TrainConfig.jit_compile's comment).
XLA_MIN_COMPUTE_CAPABILITY = (7, 0)


@dataclass(frozen=True)
class Devices:
    """The accelerators a training process sees: each GPU's compute capability (major, minor),
    and the CPU's feature flags (from /proc/cpuinfo)."""

    gpus: tuple[tuple[int, int], ...] = ()
    cpu_flags: frozenset[str] = frozenset()
    cpu_model: str = ""
    gpu_names: tuple[str, ...] = ()
    cpu_bf16_forced: str = ""  # KERAS_ZOO_CPU_BF16: native | emulated | "" (the CPU's flags decide)

    @property
    def slowest_gpu(self) -> tuple[int, int] | None:
        """The lowest compute capability: a replicated model runs at the pace of its weakest card."""
        return min(self.gpus) if self.gpus else None

    @property
    def native_cpu_bf16(self) -> bool:
        """Whether `auto` treats the CPU as computing bf16 natively."""
        if self.cpu_bf16_forced:
            return self.cpu_bf16_forced == "native"
        return bool(self.cpu_flags & NATIVE_BF16)

    def describe(self) -> dict:
        """What a run records of them (run.json's `runtime.devices`)."""
        record: dict = {
            "cpu": self.cpu_model or "unknown",
            "cpu_flags": sorted(self.cpu_flags & DECIDING_CPU_FLAGS),
            "cpu_bf16": "native" if self.native_cpu_bf16 else "emulated",
        }
        if self.cpu_bf16_forced:
            record["cpu_bf16"] += f" ({CPU_BF16_VARIABLE})"
        if self.gpus:
            record["gpus"] = [
                {"name": name, "compute_capability": f"{major}.{minor}"}
                for name, (major, minor) in zip(
                    self.gpu_names or ("GPU",) * len(self.gpus), self.gpus
                )
            ]
        return record


def local_devices() -> Devices:
    """This process's GPUs (as `CUDA_VISIBLE_DEVICES` leaves them) and CPU flags."""

    gpus, names = [], []
    for gpu in tf.config.list_physical_devices("GPU"):
        details = tf.config.experimental.get_device_details(gpu)
        capability = details.get("compute_capability") or (0, 0)
        gpus.append((int(capability[0]), int(capability[1])))
        names.append(str(details.get("device_name", gpu.name)))
    return Devices(tuple(gpus), cpu_flags(), cpu_model(), tuple(names), forced_cpu_bf16())


def forced_cpu_bf16(environ=os.environ) -> str:
    """KERAS_ZOO_CPU_BF16's value (`native`, `emulated`), or "" where it is not set."""
    value = environ.get(CPU_BF16_VARIABLE, "").strip().lower()
    if value and value not in CPU_BF16_CHOICES:
        raise UserError(
            f"{CPU_BF16_VARIABLE}: '{value}' is not one of {', '.join(CPU_BF16_CHOICES)} "
            "(unset it to let the CPU decide)"
        )
    return value


def resolve_precision(precision: str, devices: Devices, cpu_bf16: bool = True) -> str:
    """The Keras dtype policy for `precision`; `auto` is:
    - GPUs of compute capability 8.0 or newer (Ampere, Hopper, ...): `mixed_bfloat16`;
    - 7.x (Volta, Turing): `mixed_float16` (Keras wraps the optimizer in a `LossScaleOptimizer`);
    - older GPUs: `float32`;
    - CPUs with native bf16 (AVX512-BF16 or AMX), for models where it pays (`cpu_bf16`, the
      recipe's measured choice: text encoders fine-tune about 1.5x faster, EfficientNet 2.3x
      slower): `mixed_bfloat16`; other CPUs: `float32` (bf16 is emulated there).
      KERAS_ZOO_CPU_BF16=native|emulated decides instead of the CPU's flags.
    """
    if precision != "auto":
        return precision
    gpu = devices.slowest_gpu
    if gpu is not None:
        if gpu >= (8, 0):
            return "mixed_bfloat16"
        return "mixed_float16" if gpu >= (7, 0) else "float32"
    return "mixed_bfloat16" if cpu_bf16 and devices.native_cpu_bf16 else "float32"


def resolve_jit_compile(jit_compile: bool | str, devices: Devices) -> bool:
    """`auto`: XLA on GPUs of compute capability 7.0 or newer, off on CPUs and older GPUs."""
    if jit_compile != "auto":
        return bool(jit_compile)
    gpu = devices.slowest_gpu
    return gpu is not None and gpu >= XLA_MIN_COMPUTE_CAPABILITY


@contextlib.contextmanager
def global_precision_kept() -> Iterator[None]:
    """Put Keras's global dtype policy back as it was when the block ends: a run sets it for its
    own models, and a Python caller's models built afterwards are not silently mixed precision."""
    before = keras.mixed_precision.global_policy()
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy(before)


def set_precision(policy: str) -> str:
    """Set Keras's global dtype policy for the models built next; returns it."""

    keras.mixed_precision.set_global_policy(policy)
    return policy
