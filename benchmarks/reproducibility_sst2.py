"""Same seed, same data, same metrics: the sentiment recipe on the first 6,400 rows of SST-2 train,
validated on dev.tsv, through the recipe script (`python -m recipes.sentiment train`).

    python benchmarks/reproducibility_sst2.py [--repo DIR] [--out benchmarks/out/repro]

`--repo` runs the recipe of another checkout (e.g. a `git worktree` of an older commit) with this
interpreter, so two versions of the code are compared on identical inputs. Prints the validation
metrics to 4 decimals and writes them to OUT/metrics.json. Needs ../shared (SST-2, MiniLM-L6).
Not a test: about 5 minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from common import ROOT, SHARED  # noqa: E402  (benchmarks/common.py)

SST2 = SHARED / "data" / "sst2"
MINILM = SHARED / "pretrained" / "minilm-l6-h384-uncased"
ROWS = 6400


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repo", default=str(ROOT), help="the checkout whose recipe runs (default: this one)")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "out" / "repro"))
    args = parser.parse_args()
    if not SST2.exists() or not MINILM.exists():
        raise SystemExit(f"needs {SST2} and {MINILM}")
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    subset = out / "train_6400.tsv"  # a scratch copy of the first rows, outside the repository
    with open(SST2 / "train.tsv") as f:
        subset.write_text("".join(f.readlines()[: ROWS + 1]))
    command = [sys.executable, "-m", "recipes.sentiment", "train", "--name", "repro", "--runs-dir", str(out / "runs"),
               "--overwrite", "--set", f"data.train={subset}", "--set", f"data.validation={SST2 / 'dev.tsv'}",
               "--set", "data.text_column=sentence", "--set", f"model.backbone={MINILM}"]
    start = time.perf_counter()
    subprocess.run(command, cwd=args.repo, check=True)
    wall = time.perf_counter() - start
    metrics = json.loads((out / "runs" / "sentiment" / "repro" / "metrics.json").read_text())["validation"]
    history = (out / "runs" / "sentiment" / "repro" / "history.csv").read_text()
    summary = {"repo": str(Path(args.repo).resolve()), "wall_s": round(wall, 1),
               "accuracy": round(metrics["accuracy"], 4), "macro_f1": round(metrics["macro_f1"], 4),
               "per_class_f1": {k: round(v["f1"], 4) for k, v in metrics["per_class"].items()},
               "history": history}
    (out / "metrics.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps({k: v for k, v in summary.items() if k != "history"}, indent=2))
    print(history)


if __name__ == "__main__":
    main()
