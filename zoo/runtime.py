"""TensorFlow's CPU settings that must be in place before TensorFlow makes its first tensor.

Importing a keras-zoo package changes nothing. The `keras-zoo` and `python -m recipes.<task>`
programs call `prepare_command_process()` first, which applies them; a library user calls
`configure_tensorflow_cpu()` before importing TensorFlow. A value the user already set in the
environment always wins. Measured on the project's 2-core
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

import atexit
import os
import re
import select
import signal
import sys
import time
from collections.abc import MutableMapping
from pathlib import Path

from zoo.errors import UserError

NATIVE_BF16 = frozenset({"avx512_bf16", "amx_bf16"})  # CPU flags of native bfloat16 arithmetic


def _cpuinfo_field(name: str) -> str:
    """The first `name : value` line's value in /proc/cpuinfo ("" where there is none)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return ""
    return next(
        (line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith(name)), ""
    )


def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags from /proc/cpuinfo (empty where there is none)."""
    return frozenset(_cpuinfo_field("flags").split())


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo ("" where there is none)."""
    return _cpuinfo_field("model name")


def available_memory() -> int | None:
    """Bytes of memory the system can give without swapping (MemAvailable in /proc/meminfo);
    None where that is not known."""
    try:
        text = Path("/proc/meminfo").read_text()
    except OSError:
        return None
    found = re.search(r"^MemAvailable:\s+(\d+) kB", text, re.MULTILINE)
    return int(found.group(1)) * 1024 if found else None


SPEEDUPS_VARIABLE = "KERAS_ZOO_SPEEDUPS"  # 0 turns keras-zoo's rewrites of Keras internals off (zoo/keras_compat.py)


def speedups_from_environment(environ: MutableMapping[str, str] = os.environ) -> bool | None:
    """KERAS_ZOO_SPEEDUPS as a boolean, None where it is not set. Where set, it wins over the
    config's `train.speedups` (the engine writes it into a new run's config)."""
    value = environ.get(SPEEDUPS_VARIABLE, "").strip().lower()
    if not value:
        return None
    if value in ("1", "true", "on", "yes"):
        return True
    if value in ("0", "false", "off", "no"):
        return False
    raise UserError(f"{SPEEDUPS_VARIABLE}: '{value}' is not 0 or 1")


# Names the variables set here for training's sake rather than by the user; inherited by child
# processes, so a `keras-zoo predict` started from a training process still knows.
TRAINING_DEFAULTS = "KERAS_ZOO_TRAINING_DEFAULTS"


def configure_tensorflow_cpu(
    environ: MutableMapping[str, str] = os.environ, flags: frozenset[str] | None = None
) -> None:
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
# Lines TensorFlow's C++ side prints that say nothing is wrong. Some bypass TF_CPP_MIN_LOG_LEVEL:
# they are logged before TensorFlow initialises absl logging (TensorFlow issue #100442), so the
# level is not applied yet, cuInit's is an ERROR line, and oneDNN's notice on CPUs without AVX-512
# comes mid-run, as an ERROR, the first time an int64 op runs (seen on an AMD EPYC with AVX-512 too).
HARMLESS_NATIVE_LOG = re.compile(
    r"absl::InitializeLog\(\) is called|Unable to register cu(DNN|FFT|BLAS) factory"
    r"|computation_placer\.cc.*already registered|oneDNN custom operations are on|cpu_feature_guard\.cc"
    r"|rebuild TensorFlow with the appropriate compiler|This TensorFlow binary is optimized"
    r"|oneDNN supports DT_[A-Z0-9]+ only on platforms with AVX-512"
)
# On a machine without an NVIDIA device, TensorFlow's failing search for one is harmless too; where
# there is one, these lines may say why TensorFlow cannot use it, and are kept.
NO_GPU_NATIVE_LOG = re.compile(
    HARMLESS_NATIVE_LOG.pattern + r"|cudart_stub\.cc.*Could not find cuda drivers"
    r"|cuda_(platform|driver|diagnostics)\.cc|failed call to cuInit"
)
VERBOSE_VARIABLE = "KERAS_ZOO_VERBOSE"
# How long a line without its end (a progress bar redrawn with \r) waits for the rest before it
# is passed on as it is.
PARTIAL_LINE_WAIT_S = 0.05


def harmless_native_log() -> re.Pattern:
    """The lines to drop on this machine."""
    return HARMLESS_NATIVE_LOG if list(Path("/dev").glob("nvidia[0-9]*")) else NO_GPU_NATIVE_LOG


def native_logs_shown() -> bool:
    """`keras-zoo --verbose` (or KERAS_ZOO_VERBOSE=1) shows TensorFlow's C++ log lines."""
    return os.environ.get(VERBOSE_VARIABLE, "") not in ("", "0")


def forward_filtered(source: int, target: int, harmless: re.Pattern) -> None:
    """Copy what arrives on file descriptor `source` to `target` until end of file, line by line as
    it arrives, without the lines that `harmless` matches. A line whose end has not come within
    PARTIAL_LINE_WAIT_S is passed on as far as it goes (a progress bar drawn with \r)."""
    pending = b""
    while True:
        ready, _, _ = select.select([source], [], [], PARTIAL_LINE_WAIT_S if pending else None)
        chunk = os.read(source, 65536) if ready else b""
        if ready and not chunk:  # end of file: every writer has closed
            break
        pending += chunk
        *lines, pending = pending.split(b"\n")
        out = b"".join(
            line + b"\n" for line in lines if not harmless.search(line.decode(errors="replace"))
        )
        if pending and not ready:  # nothing more came: pass on what there is of the line
            out, pending = (
                out + (b"" if harmless.search(pending.decode(errors="replace")) else pending),
                b"",
            )
        _write_all(target, out)
    if pending and not harmless.search(pending.decode(errors="replace")):
        _write_all(target, pending)


def _write_all(fd: int, data: bytes) -> None:
    while data:
        data = data[os.write(fd, data) :]


def filter_native_logs(harmless: re.Pattern | None = None) -> None:
    """From now until this process and the processes it starts have ended, pass what they write to
    file descriptor 2 (C++ logs included) on to stderr as it comes, less the harmless lines.

    The filter is a child process forked here, reading a pipe that becomes this process's fd 2:
    a thread would die with the process, and the last lines before a crash (a fatal C++ check, a
    SIGKILL) with it; the child reads until every writer is gone. Call it before TensorFlow is
    imported (fork is safe while the process has one thread). Nothing is held: a traceback or a
    real error line comes out when it is written."""
    harmless = harmless or harmless_native_log()
    sys.stderr.flush()
    read_end, write_end = os.pipe()
    child = os.fork()
    if child == 0:  # the filter: ignores Ctrl-C (meant for the command) and ends at end of file
        try:
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            # Holds nothing of the command's but the pipe and stderr: not its stdout pipe, say,
            # which its reader would otherwise see open until this ends.
            devnull = os.open(os.devnull, os.O_RDWR)
            os.dup2(devnull, 0)
            os.dup2(devnull, 1)
            os.closerange(3, read_end)
            os.closerange(read_end + 1, os.sysconf("SC_OPEN_MAX"))
            forward_filtered(read_end, 2, harmless)
        finally:
            os._exit(0)
    os.close(read_end)
    original = os.dup(2)
    os.dup2(write_end, 2)
    os.close(write_end)

    def finish() -> None:  # at exit: stderr back to the terminal or file, the filter drained
        sys.stderr.flush()
        os.dup2(original, 2)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and os.waitpid(child, os.WNOHANG) == (0, 0):
            time.sleep(0.01)

    atexit.register(finish)


def prepare_command_process() -> None:
    """What the `keras-zoo` and `python -m recipes.<task>` programs do first, before TensorFlow
    loads: the CPU settings above, TF_CPP_MIN_LOG_LEVEL=2 (unless the user set it) and the native
    log filter, unless `native_logs_shown()`. Library users call `configure_tensorflow_cpu()`."""
    configure_tensorflow_cpu()
    if native_logs_shown():
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    filter_native_logs()
