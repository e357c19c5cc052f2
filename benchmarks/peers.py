"""keras-zoo against the PyTorch tool a user would pick instead, on identical data, alternating.

    python benchmarks/peers.py sst2   [--runs 5] [--float32] [--set KEY=VALUE ...]
    python benchmarks/peers.py conll  [--runs 5] [--sentences 2000]
    python benchmarks/peers.py images [--runs 5]
    python benchmarks/peers.py sst2-inference --run RUN_DIR [--runs 5]

Runs peer, keras-zoo, peer, keras-zoo, peer, ... (`--runs` in all, starting and ending with the
peer), each as its own process, one at a time, and prints for each run its training examples/s
(training batches only, as both tools time them: the examples of all epochs over the time of all
epochs) and its accuracy / entity F1, then the median of the keras-zoo/peer throughput ratios,
each keras-zoo run against the mean of the two peer runs around it.

- sst2: the first 6,400 rows of SST-2 train, 2 epochs, batch 32, AdamW at peak 1e-4, MiniLM-L6;
  the peer is ../shared/bench/peer_sst2_hf.py (transformers, dynamic padding, length grouping),
  dev accuracy for both. Also the dev-set inference speed of each.
- conll: the first `--sentences` CoNLL-2003 training sentences, 3 epochs (keras-zoo's NER default),
  the peer benchmarks/peers/peer_conll_hf.py; test entity F1 for both.
- sst2-inference: SST-2 dev inference only, of a finished keras-zoo sentiment run (`--run`):
  benchmarks/text_inference.py (`predict` and `evaluate`, tokenising included) against the peer's
  inference loop (benchmarks/peers/peer_sst2_inference.py: tokenising excluded, as the peer times
  it); each the median of 3 timed passes after a warm one. The ratio is `predict`'s.
- images: hymenoptera, the two phases of the image recipe, the peer benchmarks/peers/peer_images_timm.py
  (timm's efficientnet_lite0 from the same weights); validation accuracy for both.

Precision: keras-zoo runs at what `train.precision: auto` picks; `--float32` forces float32 for both
(and without it, the peer gets BF16=1 where the CPU has native bf16, as keras-zoo's auto does).

The peers need torch, transformers and timm, which never go into the project's environment:
PyTorch's PyPI wheel brings several GB of CUDA libraries. The first run makes a virtualenv for them
(`--peer-venv`, default benchmarks/out/peer-venv). Needs ../shared. Results go to --out as JSON.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

from common import ROOT, SHARED

PEER_PACKAGES = ["torch", "torchvision", "transformers", "timm"]
MINILM = SHARED / "pretrained" / "minilm-l6-h384-uncased"
EFFICIENTNET = SHARED / "pretrained" / "efficientnet-lite0-imagenet"
SST2 = SHARED / "data" / "sst2"
CONLL = SHARED / "data" / "conll2003"
HYMENOPTERA = SHARED / "data" / "hymenoptera"


def peer_python(venv: Path) -> str:
    """The peer virtualenv's python, made (with PEER_PACKAGES) on first use."""
    python = venv / "bin" / "python"
    if not python.exists():
        print(
            f"making the peer virtualenv {venv} ({', '.join(PEER_PACKAGES)}; several GB)",
            flush=True,
        )
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", *PEER_PACKAGES], check=True)
    return str(python)


def cpu_has_bf16() -> bool:
    flags = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    return "avx512_bf16" in flags or "amx_bf16" in flags


def run(
    command: list[str], env: dict | None = None, log: Path | None = None, reuse: bool = False
) -> str:
    """Run `command`, keep its output in `log`; with `reuse`, an existing log is read instead
    (to finish an interrupted alternation without rerunning the runs it already made)."""
    if reuse and log is not None and log.exists():
        print(f"  (reused {log})", flush=True)
        return log.read_text()
    start = time.perf_counter()
    done = subprocess.run(
        command, capture_output=True, text=True, env={**os.environ, **(env or {})}
    )
    output = done.stdout + done.stderr
    if log:
        log.write_text(output)
    if done.returncode:
        raise SystemExit(f"{' '.join(command)} failed ({done.returncode}):\n{output[-3000:]}")
    print(f"  ({time.perf_counter() - start:.0f} s)", flush=True)
    return output


def combined_rate(rates: list[float]) -> float:
    """Examples/s over all epochs from per-epoch rates (every epoch the same examples): all the
    examples over the sum of the epoch times, i.e. the harmonic mean."""
    return len(rates) / sum(1 / r for r in rates)


def keras_zoo(
    recipe: str, overrides: list[str], out: Path, name: str, reuse: bool
) -> tuple[dict, list[float]]:
    """One `keras-zoo train` run: its metrics.json and its training examples/s per epoch."""
    command = [
        sys.executable,
        "-m",
        "keras_zoo_cli",
        "train",
        recipe,
        "--name",
        name,
        "--overwrite",
        "--set",
        f"run.runs_dir={out / 'runs'}",
        *[a for o in overrides for a in ("--set", o)],
    ]
    run(command, log=out / f"{name}.log", reuse=reuse)
    run_dir = out / "runs" / recipe / name
    with open(run_dir / "history.csv") as f:
        rates = [
            float(v)
            for row in csv.DictReader(f)
            if (v := row.get("examples_per_second")) not in (None, "", "nan")
        ]
    return json.loads((run_dir / "metrics.json").read_text()), rates


def sst2(args, out: Path, python: str) -> tuple[list, list]:
    rows = args.rows or 6400
    train = out / f"sst2_train_{rows}.tsv"
    train.write_text("".join(open(SST2 / "train.tsv").readlines()[: rows + 1]))
    overrides = [
        f"data.train={train}",
        f"data.validation={SST2 / 'dev.tsv'}",
        "data.text_column=sentence",
        f"model.backbone={MINILM}",
        "train.epochs=2",
        "train.batch_size=32",
        "train.learning_rate=1e-4",
    ]
    peer_cmd = [
        python,
        str(SHARED / "bench" / "peer_sst2_hf.py"),
        str(MINILM),
        str(train),
        str(SST2 / "dev.tsv"),
        str(rows),
        "2",
        "32",
        "1e-4",
    ]

    def parse_peer(text):
        rates = [float(v) for v in re.findall(r"epoch \d+: ([\d.]+) examples/s", text)]
        accuracy, inference = re.search(
            r"dev accuracy ([\d.]+) \(\d+ sentences, inference (\d+)/s\)", text
        ).groups()
        return {
            "rate": combined_rate(rates),
            "score": float(accuracy),
            "inference_per_second": float(inference),
        }

    def run_kz(name):
        m, rates = keras_zoo("sentiment", overrides + args.overrides, out, name, args.reuse)
        inference = run(
            [
                sys.executable,
                str(ROOT / "benchmarks" / "text_inference.py"),
                str(out / "runs" / "sentiment" / name),
                str(SST2 / "dev.tsv"),
            ],
            log=out / f"{name}-inference.log",
            reuse=args.reuse,
        )
        return {
            "rate": combined_rate(rates),
            "score": 100 * m["validation"]["accuracy"],
            "last_epoch_score": 100
            * m["last_epoch"].get("validation", {}).get("accuracy", float("nan")),
            "chosen_epoch": m["chosen_epoch"],
            **json.loads(re.search(r"^RESULT (\{.*\})$", inference, re.M).group(1)),
        }

    return alternate(args, out, peer_cmd, parse_peer, run_kz)


def conll(args, out: Path, python: str):
    sentences = args.sentences
    train = out / f"conll_train_{sentences}.txt"
    blocks, kept = [], 0
    block: list[str] = []
    for line in open(CONLL / "train.txt", encoding="utf-8"):
        block.append(line)
        if not line.strip():
            if any(not b.startswith("-DOCSTART-") and b.strip() for b in block):
                kept += 1
            blocks.append("".join(block))
            block = []
            if kept >= sentences:
                break
    train.write_text("".join(blocks))
    overrides = [
        f"data.train={train}",
        f"data.validation={CONLL / 'valid.txt'}",
        f"data.test={CONLL / 'test.txt'}",
        f"model.backbone={MINILM}",
        "train.epochs=3",
        "train.batch_size=32",
        "train.learning_rate=1e-4",
    ]
    peer_cmd = [
        python,
        str(ROOT / "benchmarks" / "peers" / "peer_conll_hf.py"),
        str(MINILM),
        str(train),
        str(CONLL / "test.txt"),
        str(sentences),
        "3",
        "32",
        "1e-4",
    ]

    def parse_peer(text):
        rates = [float(v) for v in re.findall(r"epoch \d+: ([\d.]+) examples/s", text)]
        f1 = re.search(r"test entity F1 ([\d.]+)", text).group(1)
        return {"rate": combined_rate(rates), "score": float(f1)}

    def run_kz(name):
        m, rates = keras_zoo("ner", overrides + args.overrides, out, name, args.reuse)
        return {
            "rate": combined_rate(rates),
            "score": 100 * m["test"]["f1"],
            "validation_f1": 100 * m["validation"]["f1"],
            "last_epoch_score": 100 * m["last_epoch"].get("test", {}).get("f1", float("nan")),
            "chosen_epoch": m["chosen_epoch"],
        }

    return alternate(args, out, peer_cmd, parse_peer, run_kz)


def sst2_inference(args, out: Path, python: str):
    if not args.run:
        raise SystemExit("sst2-inference needs --run RUN_DIR (a finished sentiment run)")
    peer_cmd = [
        python,
        str(ROOT / "benchmarks" / "peers" / "peer_sst2_inference.py"),
        str(MINILM),
        str(SST2 / "dev.tsv"),
    ]

    def parse_peer(text):
        return json.loads(re.search(r"^RESULT (\{.*\})$", text, re.M).group(1))

    def run_kz(name):
        text = run(
            [
                sys.executable,
                str(ROOT / "benchmarks" / "text_inference.py"),
                args.run,
                str(SST2 / "dev.tsv"),
            ],
            log=out / f"{name}.log",
            reuse=args.reuse,
        )
        figures = json.loads(re.search(r"^RESULT (\{.*\})$", text, re.M).group(1))
        return {"rate": figures["predict_examples_per_second"], "score": float("nan"), **figures}

    return alternate(args, out, peer_cmd, parse_peer, run_kz)


def images(args, out: Path, python: str):
    overrides = [
        f"data.train={HYMENOPTERA / 'train'}",
        f"data.validation={HYMENOPTERA / 'val'}",
        f"model.backbone={EFFICIENTNET}",
    ]
    peer_cmd = [
        python,
        str(ROOT / "benchmarks" / "peers" / "peer_images_timm.py"),
        str(EFFICIENTNET),
        str(HYMENOPTERA / "train"),
        str(HYMENOPTERA / "val"),
        "4",
        "8",
        "32",
    ]

    def parse_peer(text):
        rates = [float(v) for v in re.findall(r"epoch \d+: ([\d.]+) examples/s", text)]
        accuracy = re.search(r"validation accuracy ([\d.]+)", text).group(1)
        return {"rate": combined_rate(rates), "score": float(accuracy)}

    def run_kz(name):
        m, rates = keras_zoo(
            "image_classification", overrides + args.overrides, out, name, args.reuse
        )
        return {
            "rate": combined_rate(rates),
            "score": 100 * m["validation"]["accuracy"],
            "last_epoch_score": 100
            * m["last_epoch"].get("validation", {}).get("accuracy", float("nan")),
            "chosen_epoch": m["chosen_epoch"],
        }

    return alternate(args, out, peer_cmd, parse_peer, run_kz)


def alternate(args, out: Path, peer_cmd: list[str], parse_peer, run_kz) -> tuple[list, list]:
    env = {"BF16": "1"} if cpu_has_bf16() and not args.float32 else {}
    peers, ours = [], []
    for i in range(args.runs):
        if i % 2 == 0:
            print(f"run {i + 1}/{args.runs}: peer", flush=True)
            peers.append(
                parse_peer(run(peer_cmd, env, out / f"peer{len(peers) + 1}.log", args.reuse))
            )
            print(f"  {peers[-1]}", flush=True)
        else:
            print(f"run {i + 1}/{args.runs}: keras-zoo", flush=True)
            ours.append(run_kz(f"kz{len(ours) + 1}"))
            print(f"  {ours[-1]}", flush=True)
    return peers, ours


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("task", choices=["sst2", "conll", "images", "sst2-inference"])
    parser.add_argument(
        "--run", default="", help="sst2-inference: the keras-zoo sentiment run to time"
    )
    parser.add_argument("--runs", type=int, default=5, help="odd, >= 3: peer first and last")
    parser.add_argument("--rows", type=int, default=0, help="sst2: training rows (default 6400)")
    parser.add_argument("--sentences", type=int, default=2000, help="conll: training sentences")
    parser.add_argument("--float32", action="store_true", help="both tools in float32")
    parser.add_argument(
        "--set", dest="overrides", action="append", default=[], help="keras-zoo config overrides"
    )
    parser.add_argument("--peer-venv", default=str(ROOT / "benchmarks" / "out" / "peer-venv"))
    parser.add_argument("--out", default="")
    parser.add_argument(
        "--reuse",
        action="store_true",
        help="finish an interrupted alternation: read the runs whose logs --out holds instead of rerunning them",
    )
    args = parser.parse_args()
    if args.runs < 3 or args.runs % 2 == 0:
        parser.error("--runs must be odd and at least 3 (peer, keras-zoo, peer, ...)")
    if not SHARED.exists():
        raise SystemExit(f"needs {SHARED}")
    out = Path(args.out or ROOT / "benchmarks" / "out" / f"peers-{args.task}")
    out.mkdir(parents=True, exist_ok=True)
    if args.float32:
        args.overrides = ["train.precision=float32", *args.overrides]
    python = peer_python(Path(args.peer_venv))
    peers, ours = {
        "sst2": sst2,
        "conll": conll,
        "images": images,
        "sst2-inference": sst2_inference,
    }[args.task](args, out, python)
    ratios = [
        kz["rate"] / statistics.fmean([peers[i]["rate"], peers[i + 1]["rate"]])
        for i, kz in enumerate(ours)
    ]
    summary = {
        "task": args.task,
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "float32": args.float32,
        "overrides": args.overrides,
        "peer_examples_per_second": [round(p["rate"], 2) for p in peers],
        "keras_zoo_examples_per_second": [round(k["rate"], 2) for k in ours],
        "throughput_ratios": [round(r, 3) for r in ratios],
        "median_ratio": round(statistics.median(ratios), 3),
        "peer_scores": [p.get("score") for p in peers],
        "keras_zoo_scores": [round(k["score"], 2) for k in ours],
        "peer_runs": peers,
        "keras_zoo_runs": ours,
    }
    if args.task == "sst2-inference":  # evaluate's speed against the same peer figures
        evaluate = [
            kz["evaluate_examples_per_second"]
            / statistics.fmean([peers[i]["rate"], peers[i + 1]["rate"]])
            for i, kz in enumerate(ours)
        ]
        summary |= {
            "evaluate_ratios": [round(r, 3) for r in evaluate],
            "median_evaluate_ratio": round(statistics.median(evaluate), 3),
        }
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps({k: v for k, v in summary.items() if not k.endswith("_runs")}, indent=2))


if __name__ == "__main__":
    main()
