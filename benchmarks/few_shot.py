"""Few-shot text classification against SetFit, side by side on the same samples.

For one N (examples per class), three systems train on the same draws (seeds 0-4 by default),
one system after another on this machine, and are scored on the same evaluation file:
  few_shot  keras-zoo's `model.finetune=few_shot` (its defaults)
  setfit    ../shared/bench/peer_fewshot_setfit.py (SetFit, default arguments) in --peer-python
  full      keras-zoo's ordinary fine-tuning, a fixed budget of at least as many optimizer steps
            as few_shot takes, at --full-learning-rate (chosen with --choose, below)
Accuracy is on the evaluation file; the time is training only (keras-zoo's `train_seconds` in
metrics.json, SetFit's `trainer.train()`), excluding model loading and evaluation.

Tasks: `sst2` (train.tsv; evaluated on dev.tsv) and `entity4`, a 4-class set built here from
CoNLL-2003: every entity mention in its sentence, marked `[ ... ]`, labelled 0 PER, 1 ORG, 2 LOC,
3 MISC (train from train.txt; evaluated on 1,000 mentions of test.txt drawn with seed 0).

`--choose` is the protocol that chose keras-zoo's defaults without touching the evaluation data:
1,000 train rows drawn with seed 12345 are held out as the evaluation file, the samples are drawn
from the rest with seeds 100, 101, 102.

    python benchmarks/few_shot.py --task sst2 --n 8 --peer-python ../peer/venv2/bin/python
    python benchmarks/few_shot.py --task sst2 --n 8 --choose --systems few_shot --set few_shot.pair_passes=8
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import random
import re
import statistics
import subprocess
import time
from pathlib import Path

from common import ROOT, SHARED, cpu_description

MINILM = SHARED / "pretrained" / "minilm-l6-h384-uncased"
PEER = SHARED / "bench" / "peer_fewshot_setfit.py"
ENTITY_TYPES = ["PER", "ORG", "LOC", "MISC"]


def write_tsv(path: Path, rows: list[tuple[str, int]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as f:
        f.write("sentence\tlabel\n")
        f.writelines(f"{text}\t{label}\n" for text, label in rows)
    return path


def read_tsv(path: Path) -> list[tuple[str, int]]:
    with path.open(newline="") as f:
        rows = csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        return [(r["sentence"], int(r["label"])) for r in rows]


def entity_mentions(conll: Path) -> list[tuple[str, int]]:
    """Every entity of a CoNLL-2003 file (IOB2) as (its sentence with the mention marked, type id)."""
    sentences, words, tags = [], [], []
    for line in [*conll.read_text().splitlines(), ""]:
        if not line.strip() or line.startswith("-DOCSTART-"):
            if words:
                sentences.append((words, tags))
            words, tags = [], []
            continue
        parts = line.split()
        words.append(parts[0])
        tags.append(parts[-1])
    rows = []
    for words, tags in sentences:
        for start, tag in enumerate(tags):
            if not tag.startswith("B-"):
                continue
            end = start + 1
            while end < len(tags) and tags[end] == "I-" + tag[2:]:
                end += 1
            marked = [*words[:start], "[", *words[start:end], "]", *words[end:]]
            rows.append((" ".join(marked), ENTITY_TYPES.index(tag[2:])))
    return rows


def peer_draw(labels: list[int], n: int, seed: int) -> list[int]:
    """The rows ../shared/bench/peer_fewshot_setfit.py draws (data.examples_per_class draws these)."""
    rng = random.Random(seed)
    return [
        i
        for c in sorted(set(labels))
        for i in rng.sample([j for j, y in enumerate(labels) if y == c], n)
    ]


def data_files(task: str, choose: bool, out: Path) -> tuple[Path, Path]:
    """(train TSV, evaluation TSV) for the task, or for the --choose protocol on its train rows."""
    if task == "sst2":
        train, evaluation = (
            SHARED / "data" / "sst2" / "train.tsv",
            SHARED / "data" / "sst2" / "dev.tsv",
        )
    else:
        conll = SHARED / "data" / "conll2003"
        train = write_tsv(out / "entity4_train.tsv", entity_mentions(conll / "train.txt"))
        test = entity_mentions(conll / "test.txt")
        evaluation = write_tsv(out / "entity4_test1000.tsv", random.Random(0).sample(test, 1000))
    if not choose:
        return train, evaluation
    rows = read_tsv(train)
    held = set(random.Random(12345).sample(range(len(rows)), 1000))
    return (
        write_tsv(
            out / f"{task}_choose_train.tsv", [r for i, r in enumerate(rows) if i not in held]
        ),
        write_tsv(out / f"{task}_choose_eval.tsv", [rows[i] for i in sorted(held)]),
    )


def keras_zoo_runs(
    system: str, n: int, seeds: list[int], train: Path, evaluation: Path, args
) -> list[dict]:
    """Train the sentiment recipe once per seed, in this process; accuracy and train_seconds."""
    from recipes import engine, sentiment
    from recipes.sentiment.few_shot import contrastive_steps

    common = [
        f"data.test={evaluation}",  # no validation data: nothing can be chosen on it
        "data.text_column=sentence",
        f"model.backbone={MINILM}",
        f"run.runs_dir={args.out / 'runs'}",
        "run.export=false",
        "run.embeddings=0",
    ]
    rows = read_tsv(train)
    classes = len({label for _, label in rows})
    if system == "full":
        # At least as many optimizer steps as few_shot takes (contrastive and head steps), in
        # epochs of the sample repeated `repeat` times: the same examples, fewer per-epoch saves.
        few = sentiment.RECIPE.load_config(
            overrides=[o for o in args.overrides if o.startswith("few_shot.")]
        ).few_shot
        examples, batch = n * classes, 32
        steps = contrastive_steps(examples, few) + few.head_steps
        repeat = max(1, 16 * batch // examples)
        epochs = math.ceil(steps / math.ceil(repeat * examples / batch))
    results = []
    for seed in seeds:
        name = f"{args.task}{'_choose' if args.choose else ''}_n{n}_{system}_s{seed}"
        if system == "few_shot":
            mode = [
                f"data.train={train}",
                f"data.examples_per_class={n}",
                "model.finetune=few_shot",
            ]
        else:
            sample = [rows[i] for i in peer_draw([label for _, label in rows], n, seed)]
            repeated = write_tsv(args.out / f"{name}_sample_x{repeat}.tsv", sample * repeat)
            mode = [
                f"data.train={repeated}",
                # all of the file, as a sample: nothing is carved out for validation
                f"data.examples_per_class={n * repeat}",
                "model.finetune=full",
                f"train.epochs={epochs}",
                f"train.batch_size={batch}",
                f"train.learning_rate={args.full_learning_rate}",
            ]
        cfg = sentiment.RECIPE.load_config(
            overrides=[
                *common,
                *mode,
                f"data.sample_seed={seed}",
                f"train.seed={seed}",
                f"run.name={name}",
                *args.overrides,
            ]
        )
        run, _ = engine.train(sentiment.RECIPE, cfg, overwrite=True, verbose=0)
        metrics = json.loads((run.path / "metrics.json").read_text())
        results.append(
            {
                "seed": seed,
                "accuracy": 100 * metrics["test"]["accuracy"],
                "train_seconds": metrics["train_seconds"],
            }
        )
        print(
            f"{system} seed {seed}: accuracy {results[-1]['accuracy']:.2f}, train {results[-1]['train_seconds']:.1f} s",
            flush=True,
        )
    return results


def setfit_runs(n: int, seeds: list[int], train: Path, evaluation: Path, args) -> list[dict]:
    command = [
        args.peer_python,
        str(PEER),
        str(MINILM),
        str(train),
        str(evaluation),
        str(n),
        ",".join(map(str, seeds)),
    ]
    out = subprocess.run(
        command,
        capture_output=True,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
        check=False,
    )
    found = re.findall(
        r"seed (\d+): \d+ per class, train ([\d.]+) s, accuracy ([\d.]+)", out.stdout
    )
    if len(found) != len(seeds):
        raise SystemExit(f"the SetFit peer failed:\n{out.stdout[-2000:]}\n{out.stderr[-3000:]}")
    results = [
        {"seed": int(s), "accuracy": float(a), "train_seconds": float(t)} for s, t, a in found
    ]
    for r in results:
        print(
            f"setfit seed {r['seed']}: accuracy {r['accuracy']:.2f}, train {r['train_seconds']:.1f} s",
            flush=True,
        )
    return results


def summary(system: str, results: list[dict]) -> str:
    accuracy = [r["accuracy"] for r in results]
    seconds = [r["train_seconds"] for r in results]
    return (
        f"{system:9s} median {statistics.median(accuracy):.2f} (min {min(accuracy):.2f}, max {max(accuracy):.2f}), "
        f"median train {statistics.median(seconds):.1f} s"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--task", choices=["sst2", "entity4"], default="sst2")
    parser.add_argument("--n", type=int, required=True, help="examples per class")
    parser.add_argument("--seeds", default="")
    parser.add_argument("--systems", default="few_shot,setfit,full")
    parser.add_argument("--choose", action="store_true", help="held-out train rows, seeds 100-102")
    parser.add_argument(
        "--peer-python", default=str(ROOT.parent / "peer" / "venv2" / "bin" / "python")
    )
    parser.add_argument("--full-learning-rate", type=float, default=1e-4)
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "out" / "few_shot")
    args = parser.parse_args()
    seeds = [
        int(s) for s in (args.seeds or ("100,101,102" if args.choose else "0,1,2,3,4")).split(",")
    ]
    train, evaluation = data_files(args.task, args.choose, args.out)
    print(
        f"{args.task} n={args.n} seeds {seeds}, evaluated on {evaluation.name}; {cpu_description()}; "
        f"{time.strftime('%Y-%m-%d %H:%M')}; --set {' '.join(args.overrides) or '(defaults)'}",
        flush=True,
    )
    table = {}
    for system in args.systems.split(","):
        if system == "setfit":
            table[system] = setfit_runs(args.n, seeds, train, evaluation, args)
        else:
            table[system] = keras_zoo_runs(system, args.n, seeds, train, evaluation, args)
    for system, results in table.items():
        print("RESULT", f"{args.task} n={args.n}", summary(system, results), flush=True)
    record = args.out / f"{args.task}{'_choose' if args.choose else ''}_n{args.n}.jsonl"
    with record.open("a") as f:
        f.write(
            json.dumps(
                {
                    "date": time.strftime("%Y-%m-%d %H:%M"),
                    "cpu": cpu_description(),
                    "seeds": seeds,
                    "overrides": args.overrides,
                    "results": table,
                }
            )
            + "\n"
        )


if __name__ == "__main__":
    main()
