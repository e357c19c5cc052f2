"""`model.finetune: frozen` on hymenoptera against a plain frozen head trained to convergence.

    python benchmarks/frozen_images.py [--out benchmarks/out/frozen] [--only NAME ...]

Each variant is one `keras-zoo train image_classification` run with EfficientNet-Lite0 from
../shared; the table gives the validation accuracy of the kept epoch and of the last epoch, the
training accuracy of the last epoch (under-fitting shows as training below validation) and the
wall time. `plain` is the baseline the issue asks for: no augmentation, no label smoothing, 30
epochs, the head's learning rate 1e-3.
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
import time
from pathlib import Path

from common import ROOT, SHARED  # noqa: E402  (benchmarks/common.py)

DATA = SHARED / "data" / "hymenoptera"
BACKBONE = SHARED / "pretrained" / "efficientnet-lite0-imagenet"
NO_AUGMENT = ["augment.crop_scale=[1.0, 1.0]", "augment.flip=false", "train.label_smoothing=0.0"]
VARIANTS = {
    "default": [],  # the recipe's frozen defaults
    "plain": [*NO_AUGMENT, "train.frozen_epochs=30"],
    "old-default": ["train.frozen_epochs=4"],  # before this benchmark: 4 epochs, full augmentation
    "15-epochs-light": ["train.frozen_epochs=15", "augment.crop_scale=[0.6, 1.0]", "train.label_smoothing=0.0"],
}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "out" / "frozen"))
    parser.add_argument("--only", nargs="*", default=list(VARIANTS))
    args = parser.parse_args()
    out = Path(args.out)
    rows = []
    for name in args.only:
        start = time.perf_counter()
        command = [sys.executable, "-m", "keras_zoo_cli", "train", "image_classification", "--name", name,
                   "--overwrite", "--set", f"run.runs_dir={out}", "--set", f"data.train={DATA / 'train'}",
                   "--set", f"data.validation={DATA / 'val'}", "--set", f"model.backbone={BACKBONE}",
                   "--set", "model.finetune=frozen", *[a for o in VARIANTS[name] for a in ("--set", o)]]
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode:
            raise SystemExit(f"{name} failed:\n{done.stderr[-3000:]}")
        run = out / "image_classification" / name
        metrics = json.loads((run / "metrics.json").read_text())
        with open(run / "history.csv") as f:
            history = list(csv.DictReader(f))
        rows.append({"variant": name, "settings": " ".join(VARIANTS[name]) or "(defaults)",
                     "kept_epoch": f"{metrics['chosen_epoch']['epoch']}/{metrics['chosen_epoch']['of']}",
                     "validation_accuracy": round(100 * metrics["validation"]["accuracy"], 2),
                     "last_epoch_validation_accuracy": round(100 * metrics["last_epoch"]["validation"]["accuracy"], 2),
                     "last_epoch_train_accuracy": round(100 * float(history[-1]["accuracy"]), 2),
                     "seconds": round(time.perf_counter() - start)})
        print(json.dumps(rows[-1]), flush=True)
    (out / "summary.json").write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
