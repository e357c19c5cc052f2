"""TensorFlow's CPU settings that must be in place before TensorFlow makes its first tensor.

Importing any keras-zoo package (`zoo`, `recipes`, `tuning`) calls `configure_tensorflow_cpu()`;
a value the user already set in the environment always wins. Measured on the project's 2-core
AMD EPYC (AVX2, no native bf16), a MiniLM-L6 training step on SST-2 batches
(benchmarks/step_options.py; benchmarks/RESULTS.md, "Faster than the PyTorch peer"):

- `TF_CPU_ALLOCATOR_USE_BFC=true`: TensorFlow's default CPU allocator hands every large tensor
  back to the OS when it is freed (glibc mmap/munmap), so each step page-faults its buffers in
  again (38% of the step's CPU time was in the kernel). The BFC allocator keeps freed memory for
  the next step: 47.0 -> 51.2 examples/s.
- `TF_ENABLE_ONEDNN_OPTS=0` on x86 CPUs with AVX2 but no AVX-512 (so no native bf16 either):
  TensorFlow's own (Eigen) kernels beat its oneDNN ones there, 51.2 -> 56.7 examples/s. On
  AVX-512 CPUs oneDNN stays on (TensorFlow's default, and what makes mixed bfloat16 fast on
  AVX512-BF16 / AMX); elsewhere (ARM, no /proc/cpuinfo) nothing is changed: not measured.

- Inference is the other way round: `keras-zoo predict`, `evaluate` and `export` turn oneDNN back
  on (`prefer_inference_kernels`) where it was this module's default, not the user's: SST-2 dev
  predictions ran at 145-160 sentences/s with it against 121-137 without (three alternations).

The BFC allocator keeps the memory it has taken until the process ends (up to
`TF_CPU_BFC_MEM_LIMIT_IN_MB`, 64 GiB by default): a process's resident memory stays at its peak.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import tempfile
from pathlib import Path
from typing import Iterator, MutableMapping

NATIVE_BF16 = frozenset({"avx512_bf16", "amx_bf16"})  # CPU flags of native bfloat16 arithmetic


def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags from /proc/cpuinfo (empty where there is none)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return frozenset()
    return frozenset(next((line.split(":", 1)[1].split() for line in text.splitlines()
                           if line.startswith("flags")), []))


# Names the variables set here for training's sake rather than by the user; inherited by child
# processes, so a `keras-zoo predict` started from a training process still knows.
TRAINING_DEFAULTS = "KERAS_ZOO_TRAINING_DEFAULTS"


def configure_tensorflow_cpu(environ: MutableMapping[str, str] = os.environ,
                             flags: frozenset[str] | None = None) -> None:
    """Set the defaults above in `environ`, leaving every variable that is already set."""
    environ.setdefault("TF_CPU_ALLOCATOR_USE_BFC", "true")
    flags = cpu_flags() if flags is None else flags
    if "avx2" in flags and "avx512f" not in flags and "TF_ENABLE_ONEDNN_OPTS" not in environ:
        environ["TF_ENABLE_ONEDNN_OPTS"] = "0"
        environ[TRAINING_DEFAULTS] = "TF_ENABLE_ONEDNN_OPTS"


def prefer_inference_kernels(environ: MutableMapping[str, str] = os.environ) -> None:
    """oneDNN on again for a process that only runs models forward (predict, evaluate, export),
    where `configure_tensorflow_cpu` turned it off for training. Call it before TensorFlow is
    imported (it is read then); a value the user set stays."""
    if "TF_ENABLE_ONEDNN_OPTS" in environ.get(TRAINING_DEFAULTS, "").split(","):
        environ["TF_ENABLE_ONEDNN_OPTS"] = "1"
        environ[TRAINING_DEFAULTS] = ""


# ------------------------------------------------------------------------------- native log lines
# Lines TensorFlow's C++ side prints while it loads and looks for GPUs, that say nothing is wrong.
# They bypass TF_CPP_MIN_LOG_LEVEL: they are logged before TensorFlow initialises absl logging
# (TensorFlow issue #100442), so the level is not applied yet, and cuInit's is an ERROR line.
HARMLESS_NATIVE_LOG = re.compile(
    r"absl::InitializeLog\(\) is called|Unable to register cu(DNN|FFT|BLAS) factory"
    r"|computation_placer\.cc.*already registered|oneDNN custom operations are on|cpu_feature_guard\.cc"
    r"|rebuild TensorFlow with the appropriate compiler|This TensorFlow binary is optimized")
# On a machine without an NVIDIA device, TensorFlow's failing search for one is harmless too; where
# there is one, these lines may say why TensorFlow cannot use it, and are kept.
NO_GPU_NATIVE_LOG = re.compile(HARMLESS_NATIVE_LOG.pattern + r"|cudart_stub\.cc.*Could not find cuda drivers"
                               r"|cuda_(platform|driver|diagnostics)\.cc|failed call to cuInit")


def harmless_native_log() -> re.Pattern:
    """The start-up lines to drop on this machine."""
    return HARMLESS_NATIVE_LOG if list(Path("/dev").glob("nvidia[0-9]*")) else NO_GPU_NATIVE_LOG


def native_logs_shown() -> bool:
    """`keras-zoo --verbose` (or KERAS_ZOO_VERBOSE=1) shows TensorFlow's C++ log lines."""
    return os.environ.get("KERAS_ZOO_VERBOSE", "") not in ("", "0")


@contextlib.contextmanager
def filtered_native_logs(harmless: re.Pattern | None = None) -> Iterator[None]:
    """Hold what the process writes to file descriptor 2 (C++ logs included) in a temporary file
    while the block runs, then write every line back to stderr except the harmless ones. Nothing
    else is dropped: a traceback or a real error line comes out when the block ends."""
    harmless = harmless or harmless_native_log()
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as held:
        os.dup2(held.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            held.seek(0)
            for line in held.read().decode(errors="replace").splitlines(keepends=True):
                if not harmless.search(line):
                    sys.stderr.write(line)
            sys.stderr.flush()


def load_tensorflow_quietly() -> None:
    """Import TensorFlow and let it look for GPUs (where cuInit logs) without the harmless C++
    lines, unless `native_logs_shown()`. TF_CPP_MIN_LOG_LEVEL=2 (set here unless the user set it)
    keeps TensorFlow's later INFO and WARNING lines out."""
    if native_logs_shown():
        import tensorflow as tf  # noqa: PLC0415

        tf.config.list_physical_devices()
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    with filtered_native_logs():
        import tensorflow as tf  # noqa: PLC0415

        tf.config.list_physical_devices()
