"""Take the README's TensorBoard screenshots from real runs on the shared benchmark data.

    .venv/bin/python docs/screenshots.py [--work DIR]    # about 15 minutes on 2 cores; needs chromium

It trains with the `keras-zoo` command, into WORK/runs (default /tmp/keras-zoo-docs; finished
runs are kept, so a second call only takes the pictures again):
- sentiment on the first 2,000 rows of SST-2 train (MiniLM-L6), scored on the 872 dev sentences;
- image classification on hymenoptera (EfficientNet-Lite0, the shared ImageNet weights);
- NER on the first 1,000 sentences of CoNLL-2003 train, scored on 500 of valid and test;
- a 3-trial learning-rate search on 500 SST-2 rows, for the HParams dashboard.
Then it serves TensorBoard over WORK/runs and writes scalars.png, images.png and hparams.png into
docs/screenshots/. Nothing of ../shared is copied into the repository.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path
from urllib.parse import quote

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SHARED = ROOT.parent / "shared"

from tests.tensorboard_server import hparams_sessions, screenshot, serve_tensorboard  # noqa: E402


def head_lines(source: Path, target: Path, rows: int) -> Path:
    """The header and first `rows` rows of a TSV file."""
    lines = source.read_text().splitlines(keepends=True)
    target.write_text("".join(lines[: rows + 1]))
    return target


def head_sentences(source: Path, target: Path, sentences: int) -> Path:
    """The first `sentences` sentences of a CoNLL file (blank-line separated)."""
    blocks = [
        b for b in source.read_text().split("\n\n") if b.strip() and not b.startswith("-DOCSTART-")
    ]
    target.write_text("\n\n".join(blocks[:sentences]) + "\n")
    return target


def keras_zoo(*args: str) -> None:
    print("$ keras-zoo", " ".join(args), flush=True)
    subprocess.run([sys.executable, "-m", "keras_zoo_cli", *args], check=True, cwd=ROOT)


def finished(run: Path) -> bool:
    status = run / "run.json"
    return status.exists() and json.loads(status.read_text())["status"] == "finished"


def train_runs(work: Path) -> Path:
    runs, data = work / "runs", work / "data"
    data.mkdir(parents=True, exist_ok=True)
    common = ["--runs-dir", str(runs)]
    sst2 = head_lines(SHARED / "data/sst2/train.tsv", data / "sst2_2000.tsv", 2000)
    if not finished(runs / "sentiment" / "sst2-2000"):
        keras_zoo(
            "train",
            "sentiment",
            *common,
            "--name",
            "sst2-2000",
            "--overwrite",
            "--set",
            f"data.train={sst2}",
            "--set",
            f"data.validation={SHARED / 'data/sst2/dev.tsv'}",
            "--set",
            "data.text_column=sentence",
            "--set",
            "train.epochs=3",
        )
    if not finished(runs / "image_classification" / "hymenoptera"):
        keras_zoo(
            "train",
            "image_classification",
            *common,
            "--name",
            "hymenoptera",
            "--overwrite",
            "--set",
            f"data.train={SHARED / 'data/hymenoptera'}",
            "--set",
            f"model.backbone={SHARED / 'pretrained/efficientnet-lite0-imagenet'}",
            "--set",
            "train.head_epochs=2",
            "--set",
            "train.epochs=2",
        )
    if not finished(runs / "ner" / "conll-1000"):
        conll = SHARED / "data/conll2003"
        keras_zoo(
            "train",
            "ner",
            *common,
            "--name",
            "conll-1000",
            "--overwrite",
            "--set",
            f"data.train={head_sentences(conll / 'train.txt', data / 'conll_train_1000.txt', 1000)}",
            "--set",
            f"data.validation={head_sentences(conll / 'valid.txt', data / 'conll_valid_500.txt', 500)}",
            "--set",
            f"data.test={head_sentences(conll / 'test.txt', data / 'conll_test_500.txt', 500)}",
            "--set",
            "train.epochs=3",
        )
    search = runs / "sentiment" / "lr-search"
    if not (search / "results.json").exists():
        keras_zoo(
            "tune",
            "sentiment",
            *common,
            "--name",
            "lr-search",
            "--overwrite",
            "--set",
            f"data.train={head_lines(sst2, data / 'sst2_500.tsv', 500)}",
            "--set",
            f"data.validation={SHARED / 'data/sst2/dev.tsv'}",
            "--set",
            "data.text_column=sentence",
            "--set",
            "train.epochs=1",
            "--set",
            "tuning.algorithm=grid",
            "--set",
            "tuning.max_trials=3",
            "--set",
            "tuning.space={train.learning_rate: [3.0e-5, 1.0e-4, 3.0e-4]}",
        )
    return runs


# What each picture shows: the per-epoch curves of the three runs (not the search's trials, nor the
# HParams sessions' step-0 scalars), the confusion matrices, the HParams table.
VIEWS = {
    "scalars": "scalars&_smoothingWeight=0&tagFilter="
    + quote("^epoch_(loss|accuracy|entity_f1)$")
    + "&regexInput="
    + quote("^(sentiment/sst2|image|ner).*/(train|validation)$"),
    "images": "images",
    "hparams": "hparams",
}


def take_screenshots(runs: Path, out: Path, work: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    with serve_tensorboard(
        runs, ready=lambda server: len(hparams_sessions(server)) >= 6, timeout=180
    ) as server:
        for dashboard, view in VIEWS.items():
            screenshot(
                f"{server.url}/#{view}",
                out / f"{dashboard}.png",
                work / "chromium",
                budget_ms=60000,
            )
            print(f"wrote {out / dashboard}.png")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/keras-zoo-docs"))
    args = parser.parse_args()
    if not SHARED.exists():
        raise SystemExit(f"{SHARED}: the shared benchmark data is not there")
    if not (shutil.which("chromium") or shutil.which("chromium-browser")):
        raise SystemExit(
            "chromium is not installed (`make browser` installs it with apt, as root or with sudo)"
        )
    runs = train_runs(args.work)
    take_screenshots(runs, ROOT / "docs" / "screenshots", args.work)


if __name__ == "__main__":
    main()
