"""Does memory accumulate across trials? A 21-trial random search of the sentiment recipe on a tiny
BERT and generated reviews, printing the search process's resident memory after each trial.

    python benchmarks/tuning_memory.py [--trials 21] [--trial-process in_process|subprocess] [--out ...]

`in_process` (the harder case, and the default here) trains every trial in the search process,
clearing Keras's state between trials; `subprocess` (keras-zoo's default) runs each trial in a fresh
process, so the search process only holds Keras Tuner. The acceptance figure is RSS after trial 20
against RSS after trial 3 (within 10%). Needs nothing from ../shared; about 10 minutes on 2 cores.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from common import benchmark_parser


def main() -> None:
    parser = benchmark_parser("tuning-memory")
    parser.add_argument("--trials", type=int, default=21)
    parser.add_argument(
        "--trial-process", default="in_process", choices=["in_process", "subprocess"]
    )
    args = parser.parse_args()
    out = Path(args.out)
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)

    from recipes import sentiment
    from tests.conftest import FILLER, NEGATIVE, POSITIVE, make_reviews, save_tiny_bert, write_jsonl
    from tuning import tune

    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + sorted(
        set(POSITIVE + NEGATIVE + FILLER)
    )
    backbone = save_tiny_bert(vocab, out / "tiny_bert")
    train = write_jsonl(out / "train.jsonl", make_reviews(200, seed=1))
    dev = write_jsonl(out / "dev.jsonl", make_reviews(60, seed=2))
    cfg = sentiment.RECIPE.load_config(
        overrides=[
            f"model.backbone={backbone}",
            f"data.train={train}",
            f"data.validation={dev}",
            "train.epochs=1",
            "tuning.algorithm=random",
            f"tuning.max_trials={args.trials}",
            f"tuning.trial_process={args.trial_process}",
            *args.overrides,
        ]
    )
    cfg.tuning.space = {
        "train.learning_rate": {"min": 1e-4, "max": 1e-2, "sampling": "log"},
        "train.batch_size": [8, 16, 32],
        "model.dropout": {"min": 0.0, "max": 0.3},
        "model.pooling": ["mean", "cls"],
    }
    result = tune("sentiment", cfg, out / "search")

    rss = []
    for trial in sorted(result.trials, key=lambda t: int(t["trial_id"])):
        done = json.loads((result.search.trial(trial["trial_id"]) / "result.json").read_text())
        rss.append(done.get("search_rss_gib"))
        print(
            f"after trial {len(rss):>2} ({trial['status']}): search process RSS {rss[-1]:.3f} GiB",
            flush=True,
        )
    summary = {"trial_process": args.trial_process, "rss_gib_after_each_trial": rss}
    if len(rss) >= 20:
        summary["rss_trial20_over_trial3"] = rss[19] / rss[2]
        print(
            f"RSS after trial 20 / after trial 3: {rss[19]:.3f} / {rss[2]:.3f} GiB = {rss[19] / rss[2]:.3f}"
        )
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")


if __name__ == "__main__":
    main()
