"""SST-2 dev accuracy with length grouping (keras-zoo's CPU default) against length buckets, at the
peer benchmark's budget: does the faster batching cost accuracy?

    python benchmarks/batching_accuracy.py [--rows 6400] [--seeds 1 2] [--out benchmarks/out/batching]

For each seed, both batchings train the default sentiment config on the first ROWS SST-2 training
rows (2 epochs, batch 32, peak learning rate 1e-4, as `benchmarks/peers.py sst2`), one process
each, and report dev accuracy (872 sentences) with the training examples/s. `buckets` pads each
batch to its length bucket, as keras-zoo does under XLA, here without XLA (the encoder's
`pad_to_buckets` forced on), so the batching is the only difference. Needs ../shared. Not a test.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

from common import ROOT, SHARED

SST2 = SHARED / "data" / "sst2"
MINILM = SHARED / "pretrained" / "minilm-l6-h384-uncased"


def train_one(rows_file: Path, seed: int, batching: str, out: Path) -> dict:
    """One run, in this process: returns dev accuracy and the epochs' training examples/s."""
    import zoo.text_inputs
    from recipes import engine, sentiment

    if batching == "buckets":

        class BucketedEncoder(zoo.text_inputs.TextEncoder):
            def __init__(self, *args, pad_to_buckets: bool = False, **kwargs):
                super().__init__(*args, pad_to_buckets=True, **kwargs)

        zoo.text_inputs.TextEncoder = BucketedEncoder  # sentiment.build imports it when it runs
    cfg = sentiment.RECIPE.load_config(
        overrides=[
            f"data.train={rows_file}",
            f"data.validation={SST2 / 'dev.tsv'}",
            "data.text_column=sentence",
            f"model.backbone={MINILM}",
            "train.epochs=2",
            "train.batch_size=32",
            "train.learning_rate=1e-4",
            f"train.seed={seed}",
            f"run.runs_dir={out}",
            f"run.name={batching}-seed{seed}",
            "run.export=false",
            "run.embeddings=0",
        ]
    )
    _, report = engine.train(sentiment.RECIPE, cfg, overwrite=True, verbose=2)
    return {
        "seed": seed,
        "batching": batching,
        "dev_accuracy": round(100 * report["validation"]["accuracy"], 2),
        "kept_epoch": report["chosen_epoch"]["epoch"],
        "examples_per_second": [round(v, 1) for v in report["train_examples_per_second"]],
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=6400)
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "out" / "batching"))
    parser.add_argument("--one", nargs=2, metavar=("SEED", "BATCHING"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    out = Path(args.out)
    rows_file = out / f"sst2_train_{args.rows}.tsv"
    if args.one:
        print(
            "RESULT " + json.dumps(train_one(rows_file, int(args.one[0]), args.one[1], out)),
            flush=True,
        )
        return
    if not SST2.exists() or not MINILM.exists():
        raise SystemExit(f"needs {SST2} and {MINILM}")
    out.mkdir(parents=True, exist_ok=True)
    with open(SST2 / "train.tsv") as f:
        rows_file.write_text("".join(f.readlines()[: args.rows + 1]))
    results = []
    for seed in args.seeds:
        for batching in ("grouping", "buckets"):
            done = subprocess.run(
                [
                    sys.executable,
                    __file__,
                    "--rows",
                    str(args.rows),
                    "--out",
                    str(out),
                    "--one",
                    str(seed),
                    batching,
                ],
                capture_output=True,
                text=True,
                cwd=ROOT,
            )
            line = [x for x in done.stdout.splitlines() if x.startswith("RESULT ")]
            if done.returncode or not line:
                raise SystemExit(f"seed {seed} {batching} failed:\n{done.stderr[-3000:]}")
            results.append(json.loads(line[0][len("RESULT ") :]))
            print(results[-1], flush=True)
    for batching in ("grouping", "buckets"):
        scores = [r["dev_accuracy"] for r in results if r["batching"] == batching]
        print(f"{batching}: dev accuracy {scores}, mean {statistics.fmean(scores):.2f}")


if __name__ == "__main__":
    main()
