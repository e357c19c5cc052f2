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

The BFC allocator keeps the memory it has taken until the process ends (up to
`TF_CPU_BFC_MEM_LIMIT_IN_MB`, 64 GiB by default): a process's resident memory stays at its peak.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import MutableMapping

NATIVE_BF16 = frozenset({"avx512_bf16", "amx_bf16"})  # CPU flags of native bfloat16 arithmetic


def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags from /proc/cpuinfo (empty where there is none)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return frozenset()
    return frozenset(next((line.split(":", 1)[1].split() for line in text.splitlines()
                           if line.startswith("flags")), []))


def configure_tensorflow_cpu(environ: MutableMapping[str, str] = os.environ,
                             flags: frozenset[str] | None = None) -> None:
    """Set the defaults above in `environ`, leaving every variable that is already set."""
    environ.setdefault("TF_CPU_ALLOCATOR_USE_BFC", "true")
    flags = cpu_flags() if flags is None else flags
    if "avx2" in flags and "avx512f" not in flags:
        environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
