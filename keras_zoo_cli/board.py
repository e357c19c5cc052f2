"""`keras-zoo tensorboard [RUNS_DIR]`: TensorBoard over a runs directory, on 127.0.0.1 by default.

TensorBoard's own `program.TensorBoard` serves; this only picks safe defaults (loopback, a free
port), prints the URL and stops on Ctrl-C without a traceback.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

from zoo.errors import UserError


def serve(runs_dir: str | Path, host: str = "127.0.0.1", port: int = 0) -> None:
    """Serve TensorBoard over `runs_dir` on `host`:`port` (0: a free port) until Ctrl-C."""
    runs_dir = Path(runs_dir)
    if not runs_dir.is_dir():
        raise UserError(
            f"{runs_dir}: no such directory (train a recipe first, or name the runs directory)"
        )
    if not os.access(runs_dir, os.R_OK | os.X_OK):
        raise UserError(f"{runs_dir}: cannot read it (permission denied)")
    if not 0 <= port <= 65535:
        raise UserError(f"--port {port}: must be between 0 and 65535")
    from tensorboard import program  # imports TensorFlow: seconds

    board = program.TensorBoard()
    board.configure(argv=[None, "--logdir", str(runs_dir), "--host", host, "--port", str(port)])
    try:
        url = board.launch()  # serves from a daemon thread
    except program.TensorBoardServerException as e:  # port in use, address not available, ...
        raise UserError(f"TensorBoard on {host}:{port}: {e.msg}") from None
    print(
        f"TensorBoard {program.version.VERSION} at {url} over {runs_dir.resolve()} (Ctrl-C to stop)",
        flush=True,
    )
    try:
        threading.Event().wait()  # until Ctrl-C; the server thread ends with the process
    except KeyboardInterrupt:
        print("TensorBoard stopped", flush=True)
