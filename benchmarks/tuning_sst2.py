"""A 12-trial Bayesian search of the sentiment recipe on 5,000 SST-2 training examples, MiniLM-L6.

    python benchmarks/tuning_sst2.py [--trials 12] [--subset 5000] [--out benchmarks/out/tuning-sst2] [--resume]

1. Writes a random 5,000-row subset of SST-2 train (seed 0) under --out (never in the repository).
2. Trains the recipe's default config on it: the baseline dev accuracy.
3. Searches (Bayesian, objective val_accuracy = dev accuracy, each trial in its own process) over
   the sentiment recipe's default space, with epochs limited to 1-2 to keep a trial to a few minutes.
4. Trains best.yaml again and compares its dev accuracy with the search's reported objective.

Prints and writes summary.json: best and baseline dev accuracy, trials per hour, the search
process's resident memory after each trial and each trial process's peak. Needs ../shared. Takes
about an hour on 2 cores.
"""

from __future__ import annotations

import json
import random
import time
from pathlib import Path

from common import SHARED, benchmark_parser

SST2 = SHARED / "data" / "sst2"
MINILM = SHARED / "pretrained" / "minilm-l6-h384-uncased"


def main() -> None:
    parser = benchmark_parser("tuning-sst2")
    parser.add_argument("--trials", type=int, default=12)
    parser.add_argument("--subset", type=int, default=5000)
    parser.add_argument(
        "--resume", action="store_true", help="continue an interrupted search in --out"
    )
    args = parser.parse_args()
    if not SST2.exists() or not MINILM.exists():
        raise SystemExit(f"needs {SST2} and {MINILM}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    from recipes import engine, sentiment
    from tuning import tune
    from tuning.results import format_table

    subset = out / "train_subset.tsv"
    if not subset.exists():
        header, *rows = (SST2 / "train.tsv").read_text().splitlines(keepends=True)
        subset.write_text(header + "".join(random.Random(0).sample(rows, args.subset)))
    data = [
        f"data.train={subset}",
        f"data.validation={SST2 / 'dev.tsv'}",
        "data.text_column=sentence",
        f"model.backbone={MINILM}",
        f"run.runs_dir={out}",
    ]

    baseline_run = out / "sentiment" / "default"
    if not (baseline_run / "metrics.json").exists():
        engine.train(
            sentiment.RECIPE,
            sentiment.RECIPE.load_config(overrides=[*data, "run.name=default"]),
            overwrite=True,
            verbose=2,
            export=False,
        )
    baseline = json.loads((baseline_run / "metrics.json").read_text())["validation"]["accuracy"]

    space = dict(sentiment.RECIPE.load_config().tuning.space, **{"train.epochs": [1, 2]})
    cfg = sentiment.RECIPE.load_config(
        overrides=[
            *data,
            "tuning.algorithm=bayesian",
            f"tuning.max_trials={args.trials}",
            "tuning.objective=val_accuracy",
            *args.overrides,
        ]
    )
    cfg.tuning.space = space
    start = time.time()
    result = tune("sentiment", cfg, out / "search", resume=args.resume, overwrite=not args.resume)
    search_hours = (time.time() - start) / 3600
    print(format_table(result))

    trials = []
    for row in sorted(result.trials, key=lambda r: int(r["trial_id"])):
        file = result.search.trial(row["trial_id"]) / "result.json"
        done = json.loads(file.read_text()) if file.exists() else {}
        trials.append(
            {
                "trial": row["trial_id"],
                "status": row["status"],
                "val_accuracy": row["objective"],
                "duration_s": row["duration_s"],
                "search_rss_gib": done.get("search_rss_gib"),
                "trial_peak_rss_gib": done.get("trial_peak_rss_gib"),
            }
        )

    again_run = out / "sentiment" / "best-again"
    best_cfg = sentiment.RECIPE.load_config(
        result.search.best_config, [f"run.runs_dir={out}", "run.name=best-again"]
    )
    engine.train(sentiment.RECIPE, best_cfg, overwrite=True, verbose=2, export=False)
    again = json.loads((again_run / "metrics.json").read_text())["validation"]["accuracy"]

    summary = {
        "subset": args.subset,
        "trials_requested": args.trials,
        "baseline_default_config_dev_accuracy": baseline,
        "best_trial": result.best["trial_id"],
        "best_dev_accuracy": result.best["objective"],
        "best_hyperparameters": result.best["hyperparameters"],
        "best_config_retrained_dev_accuracy": again,
        "retrained_minus_reported_points": 100 * (again - result.best["objective"]),
        "completed_trials": sum(t["status"] == "COMPLETED" for t in trials),
        "search_hours": search_hours,
        "trials_per_hour": len(trials) / search_hours if not args.resume else None,
        "trials": trials,
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps({k: v for k, v in summary.items() if k != "trials"}, indent=2))
    print("trial  status     dev_acc  time_s  search_rss_gib  trial_peak_rss_gib")
    for t in trials:
        print(
            f"{t['trial']:>5}  {t['status']:<9}  {t['val_accuracy'] or float('nan'):.4f}  {t['duration_s'] or 0:6.0f}"
            f"  {t['search_rss_gib'] or float('nan'):14.3f}  {t['trial_peak_rss_gib'] or float('nan'):18.3f}"
        )


if __name__ == "__main__":
    main()
