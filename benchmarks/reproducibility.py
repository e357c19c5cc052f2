"""Same seed, same data, same metrics: one recipe run through its script (`python -m recipes.<task>
train`), from this checkout or another, so that two versions of the code are compared on
identical inputs.

    python benchmarks/reproducibility.py --task sst2|hymenoptera|conll2000 [--repo DIR] [--out DIR]

- `sst2`: the sentiment recipe's defaults (MiniLM-L6) on the first 6,400 rows of SST-2 train,
  validated on dev.tsv (about 5 minutes on 2 cores);
- `hymenoptera`: the image recipe's defaults (EfficientNet-Lite0, head then fine-tuning) on
  hymenoptera train/val, with 2 head and 2 fine-tuning epochs to keep it short (`--no-augment`:
  centre crops, no flips);
- `conll2000`: the NER recipe's defaults (MiniLM-L6) on the first 2,000 sentences of CoNLL-2003
  train (whole documents, up to the one that reaches 2,000), validated on valid.txt and tested on
  test.txt; then the run's test set is evaluated again by the checkout's `evaluate`.

`--repo` runs the recipe of another checkout (e.g. a `git worktree` of an older commit) with this
interpreter. Prints the figures to 4 decimals and writes them to OUT/<task>.json. Needs ../shared.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from common import ROOT, SHARED, cpu_description

MINILM = SHARED / "pretrained" / "minilm-l6-h384-uncased"
EFFICIENTNET = SHARED / "pretrained" / "efficientnet-lite0-imagenet"
SST2, CONLL, HYMENOPTERA = (SHARED / "data" / name for name in ("sst2", "conll2003", "hymenoptera"))


def first_rows(source: Path, target: Path, rows: int) -> Path:
    with open(source) as f:
        target.write_text("".join(f.readlines()[: rows + 1]))
    return target


def first_sentences(source: Path, target: Path, sentences: int) -> Path:
    """Whole documents of a CoNLL file until `sentences` sentences (-DOCSTART- lines not counted)."""
    kept, count = [], 0
    for block in source.read_text().split("\n\n"):
        if block.startswith("-DOCSTART-") and count >= sentences:
            break
        kept.append(block)
        count += bool(block.strip()) and not block.startswith("-DOCSTART-")
    target.write_text("\n\n".join(kept).rstrip("\n") + "\n")
    return target


def settings(task: str, out: Path, augment: bool = True) -> tuple[str, list[str]]:
    if task == "sst2":
        train = first_rows(SST2 / "train.tsv", out / "train_6400.tsv", 6400)
        return "sentiment", [
            f"data.train={train}",
            f"data.validation={SST2 / 'dev.tsv'}",
            "data.text_column=sentence",
            f"model.backbone={MINILM}",
        ]
    if task == "hymenoptera":
        return "image_classification", [
            f"data.train={HYMENOPTERA / 'train'}",
            f"data.validation={HYMENOPTERA / 'val'}",
            f"model.backbone={EFFICIENTNET}",
            "train.head_epochs=2",
            "train.epochs=2",
        ] + (["augment.crop_scale=[1.0, 1.0]", "augment.flip=false"] if not augment else [])
    train = first_sentences(CONLL / "train.txt", out / "train_2000.txt", 2000)
    return "ner", [
        f"data.train={train}",
        f"data.validation={CONLL / 'valid.txt'}",
        f"data.test={CONLL / 'test.txt'}",
        f"model.backbone={MINILM}",
    ]


def rounded(report: dict) -> dict:
    keys = ("accuracy", "macro_f1", "precision", "recall", "f1", "token_accuracy")
    return {k: round(report[k], 4) for k in keys if k in report}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--task", choices=["sst2", "hymenoptera", "conll2000"], default="sst2")
    parser.add_argument("--repo", default=str(ROOT), help="the checkout whose recipe runs")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "out" / "repro"))
    parser.add_argument(
        "--no-augment",
        action="store_true",
        help="hymenoptera without augmentation: comparable with code before 2026-12-07, whose "
        "augmentation drew its random crops in thread order (not the same run twice)",
    )
    args = parser.parse_args()
    out = Path(args.out).resolve() / args.task
    out.mkdir(parents=True, exist_ok=True)
    recipe, overrides = settings(args.task, out, not args.no_augment)
    run = out / "runs" / recipe / "repro"
    script = [sys.executable, "-m", f"recipes.{recipe}"]
    env = {**os.environ, "PYTHONPATH": str(Path(args.repo).resolve())}
    command = [
        *script,
        "train",
        "--name",
        "repro",
        "--runs-dir",
        str(out / "runs"),
        "--overwrite",
        *[a for o in overrides for a in ("--set", o)],
    ]
    start = time.perf_counter()
    subprocess.run(command, cwd=args.repo, env=env, check=True)
    wall = time.perf_counter() - start
    metrics = json.loads((run / "metrics.json").read_text())
    summary = {
        "task": args.task,
        "repo": str(Path(args.repo).resolve()),
        "cpu": cpu_description(),
        "wall_s": round(wall, 1),
        "chosen_epoch": metrics["chosen_epoch"],
        **{split: rounded(metrics[split]) for split in ("validation", "test") if split in metrics},
    }
    if args.task == "conll2000":  # the same run's test set scored again by this checkout's evaluate
        subprocess.run(
            [*script, "evaluate", str(run), "--data", str(CONLL / "test.txt"), "--split", "test"],
            cwd=args.repo,
            env=env,
            check=True,
            capture_output=True,
        )
        again = json.loads((run / "metrics.json").read_text())["evaluate_test"]
        summary["evaluate_test"] = {
            **rounded(again),
            "per_type_f1": {k: round(v["f1"], 4) for k, v in again["per_type"].items()},
        }
    summary["history"] = (run / "history.csv").read_text()
    (Path(args.out).resolve() / f"{args.task}.json").write_text(
        json.dumps(summary, indent=2) + "\n"
    )
    print(json.dumps({k: v for k, v in summary.items() if k != "history"}, indent=2))


if __name__ == "__main__":
    main()
