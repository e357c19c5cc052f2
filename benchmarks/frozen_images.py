"""`model.finetune: frozen` image runs: the settings of the frozen head, and its cost before and
after computing the backbone's features once.

    python benchmarks/frozen_images.py [--data hymenoptera|synthetic10] [--only NAME ...]
        [--tree LABEL=PATH ...] [--out benchmarks/out/frozen]

Each variant is one `keras-zoo train image_classification` run with EfficientNet-Lite0 from
../shared, from each `--tree` (a checkout of keras-zoo, e.g. a git worktree of an older commit;
default: this one), one after the other. The table gives the validation accuracy (4 decimals) of
the kept and the last epoch, the training accuracy of the last epoch (under-fitting shows as
training below validation), the median epoch time (from the TensorBoard event times of the
epochs' ends, so it excludes what runs once before the first epoch) and the command's wall time.

`--data synthetic10` is a generated set of 10 classes (shapes in random colours, positions and
sizes on noisy backgrounds; 300 training and 50 validation images a class, 256x256 JPEG, seeded)
written once into benchmarks/out/synthetic10: a larger frozen-head workload than hymenoptera's
244 training images. `plain` is the baseline of the frozen-head defaults: no augmentation, no
label smoothing, 30 epochs, the head's learning rate 1e-3.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from common import ROOT, SHARED, cpu_description

BACKBONE = SHARED / "pretrained" / "efficientnet-lite0-imagenet"
NO_AUGMENT = ["augment.crop_scale=[1.0, 1.0]", "augment.flip=false", "train.label_smoothing=0.0"]
VARIANTS = {
    "default": [],  # the recipe's frozen defaults
    "plain": [*NO_AUGMENT, "train.frozen_epochs=30"],
    "old-default": ["train.frozen_epochs=4"],  # before this benchmark: 4 epochs, full augmentation
    "15-epochs-light": [
        "train.frozen_epochs=15",
        "augment.crop_scale=[0.6, 1.0]",
        "train.label_smoothing=0.0",
    ],
}
SHAPES = (
    "circle",
    "square",
    "triangle",
    "cross",
    "ring",
    "diamond",
    "h-stripes",
    "v-stripes",
    "checker",
    "dots",
)


def synthetic10(
    root: Path, per_class: dict[str, int] | None = None, side: int = 256, seed: int = 0
) -> Path:
    """The generated 10-class set (see the module docstring), written once."""
    import numpy as np
    from PIL import Image, ImageDraw

    per_class = per_class or {"train": 300, "val": 50}
    if (root / "COMPLETE").exists():
        return root
    rng = np.random.default_rng(seed)
    for split, count in per_class.items():
        for label in SHAPES:
            (root / split / label).mkdir(parents=True, exist_ok=True)
            for i in range(count):
                background = rng.integers(0, 256, 3)
                pixels = np.clip(background + rng.normal(0, 30, (side, side, 3)), 0, 255).astype(
                    "uint8"
                )
                image = Image.fromarray(pixels)
                draw = ImageDraw.Draw(image)
                colour = tuple(int(c) for c in rng.integers(0, 256, 3))
                size = int(rng.integers(side // 5, side // 2))
                x, y = (int(v) for v in rng.integers(size, side - size, 2))
                box = [x - size, y - size, x + size, y + size]
                if label == "circle":
                    draw.ellipse(box, fill=colour)
                elif label == "square":
                    draw.rectangle(box, fill=colour)
                elif label == "triangle":
                    draw.polygon(
                        [(x, y - size), (x - size, y + size), (x + size, y + size)], fill=colour
                    )
                elif label == "cross":
                    draw.rectangle([x - size, y - size // 4, x + size, y + size // 4], fill=colour)
                    draw.rectangle([x - size // 4, y - size, x + size // 4, y + size], fill=colour)
                elif label == "ring":
                    draw.ellipse(box, outline=colour, width=max(size // 4, 2))
                elif label == "diamond":
                    draw.polygon(
                        [(x, y - size), (x + size, y), (x, y + size), (x - size, y)], fill=colour
                    )
                elif label in ("h-stripes", "v-stripes"):
                    for k in range(-size, size, max(size // 3, 4)):
                        line = (
                            [x - size, y + k, x + size, y + k + max(size // 6, 2)]
                            if label == "h-stripes"
                            else [x + k, y - size, x + k + max(size // 6, 2), y + size]
                        )
                        draw.rectangle(line, fill=colour)
                elif label == "checker":
                    step = max(size // 3, 4)
                    for a in range(-size, size, step):
                        for b in range(-size, size, step):
                            if (a // step + b // step) % 2 == 0:
                                draw.rectangle(
                                    [x + a, y + b, x + a + step, y + b + step], fill=colour
                                )
                else:  # dots
                    for _ in range(12):
                        cx, cy = (int(v) for v in rng.integers(-size, size, 2))
                        draw.ellipse([x + cx - 6, y + cy - 6, x + cx + 6, y + cy + 6], fill=colour)
                image.save(root / split / label / f"{label}_{i}.jpg", quality=90)
    (root / "COMPLETE").write_text("")
    return root


def epoch_end_times(logs: Path) -> list[float]:
    """Wall times at which the run's epochs ended: TensorBoard's `epoch_loss` events in logs/train."""
    import tensorflow as tf

    times = {}
    for events in sorted((logs / "train").glob("events.out.tfevents.*")):
        for event in tf.compat.v1.train.summary_iterator(str(events)):
            for value in event.summary.value:
                if value.tag == "epoch_loss":
                    times[event.step] = event.wall_time
    return [times[step] for step in sorted(times)]


def train(tree: Path, out: Path, name: str, data: tuple[Path, Path], settings: list[str]) -> dict:
    """One run from `tree`'s code; its figures."""
    command = [
        sys.executable,
        "-m",
        "keras_zoo_cli",
        "train",
        "image_classification",
        "--name",
        name,
        "--overwrite",
        "--set",
        f"run.runs_dir={out}",
        "--set",
        f"data.train={data[0]}",
        "--set",
        f"data.validation={data[1]}",
        "--set",
        f"model.backbone={BACKBONE}",
        "--set",
        "model.finetune=frozen",
        *[a for o in settings for a in ("--set", o)],
    ]
    start = time.perf_counter()
    done = subprocess.run(
        command,
        capture_output=True,
        text=True,
        cwd=tree,
        env={**os.environ, "PYTHONPATH": str(tree)},
    )
    seconds = time.perf_counter() - start
    if done.returncode:
        raise SystemExit(f"{name} failed:\n{done.stderr[-3000:]}")
    run = out / "image_classification" / name
    metrics = json.loads((run / "metrics.json").read_text())
    history = (run / "history.csv").read_text().splitlines()
    header, last = history[0].split(","), history[-1].split(",")
    ends = epoch_end_times(run / "logs")
    return {
        "kept_epoch": f"{metrics['chosen_epoch']['epoch']}/{metrics['chosen_epoch']['of']}",
        "validation_accuracy": round(100 * metrics["validation"]["accuracy"], 4),
        "last_epoch_validation_accuracy": round(
            100 * metrics["last_epoch"]["validation"]["accuracy"], 4
        ),
        "last_epoch_train_accuracy": round(100 * float(last[header.index("accuracy")]), 4),
        "median_epoch_seconds": round(
            statistics.median(b - a for a, b in itertools.pairwise(ends)), 2
        ),
        "seconds": round(seconds, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "out" / "frozen"))
    parser.add_argument("--data", choices=["hymenoptera", "synthetic10"], default="hymenoptera")
    parser.add_argument("--only", nargs="*", default=list(VARIANTS))
    parser.add_argument(
        "--tree", action="append", default=[], help="LABEL=PATH of a keras-zoo checkout"
    )
    args = parser.parse_args()
    out = Path(args.out)
    if args.data == "hymenoptera":
        data = (SHARED / "data" / "hymenoptera" / "train", SHARED / "data" / "hymenoptera" / "val")
    else:
        root = synthetic10(ROOT / "benchmarks" / "out" / "synthetic10")
        data = (root / "train", root / "val")
    trees = dict(t.split("=", 1) for t in args.tree) or {"current": str(ROOT)}
    print(f"# {cpu_description()}; {args.data}", flush=True)
    rows = []
    for name in args.only:
        for label, tree in trees.items():
            row = {
                "variant": name,
                "tree": label,
                "data": args.data,
                "settings": " ".join(VARIANTS[name]) or "(defaults)",
                **train(Path(tree), out, f"{args.data}-{name}-{label}", data, VARIANTS[name]),
            }
            rows.append(row)
            print(json.dumps(row), flush=True)
    (out / f"summary-{args.data}.json").write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
