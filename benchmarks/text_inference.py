"""Text inference speed of a finished sentiment run: `predict` and `evaluate` examples/s.

    python benchmarks/text_inference.py RUN_DIR DATA.tsv [--text-column sentence] [--repeats 3]
    python benchmarks/text_inference.py RUN_DIR DATA.tsv --ab batch_cost=0,32,128     # prediction batch plans

Loads the run as `keras-zoo predict/evaluate` do, runs each once to trace, then times `--repeats`
passes over all rows and prints the median examples/s:
- predict: class probabilities (`zoo.text_inputs.predict_probabilities`, what `keras-zoo predict` runs);
- evaluate: the recipe's whole evaluation (`keras-zoo evaluate` minus writing its files: the
  probabilities, the report, the confusion matrix, the sentence vectors for the projector).
`benchmarks/peers.py sst2` runs it on each keras-zoo run, beside the peer's own inference figure
(its loop over the same sentences, batch 64, sorted by length).

`--ab` times `predict` alternately in one process, `--rounds` rounds in an order rotated each round,
and prints each alternative's examples/s and its ratio to the first, round by round, with the median:
- `batch_cost=A,B,...`: `zoo.text_inputs.CPU_BATCH_COST_TOKENS` (what a batch costs, in tokens, when
  prediction plans its batches) at each value.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

from common import ROOT  # noqa: F401  (benchmarks/common.py puts the repository on sys.path)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("run")
    parser.add_argument("data")
    parser.add_argument("--text-column", default="sentence")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--ab", default="", help="batch_cost=A,B,...")
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    from zoo.runtime import prefer_inference_kernels

    prefer_inference_kernels()  # as `keras-zoo predict` and `evaluate` do, before TensorFlow loads
    from recipes import engine, sentiment
    from recipes.common.text_data import read_texts
    from zoo.text_inputs import predict_probabilities

    _, cfg, predictor = engine.open_finished(sentiment.RECIPE, args.run)
    data = read_texts(args.data, "validation", args.text_column, cfg.data.label_column)
    if args.ab:
        return alternate(args, predictor, data.texts)
    figures = {}
    for name, job in (
        ("predict", lambda: predict_probabilities(predictor.model, predictor.encoder, data.texts)),
        ("evaluate", lambda: sentiment.RECIPE.evaluate(predictor, data, "validation", cfg)),
    ):
        job()  # trace
        rates = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            job()
            rates.append(len(data) / (time.perf_counter() - start))
        figures[f"{name}_examples_per_second"] = round(statistics.median(rates), 1)
    print("RESULT " + json.dumps(figures), flush=True)


def alternate(args, predictor, texts) -> None:
    """`--ab`: predict's examples/s for each alternative, alternated in one process."""
    from common import cpu_description

    import zoo.text_inputs
    from zoo.text_inputs import predict_probabilities

    if args.ab.startswith("batch_cost="):

        def with_cost(cost: int):
            def job():
                zoo.text_inputs.CPU_BATCH_COST_TOKENS = cost
                return predict_probabilities(predictor.model, predictor.encoder, texts)

            return job

        jobs = {f"cost {c}": with_cost(int(c)) for c in args.ab.split("=", 1)[1].split(",")}
    else:
        raise SystemExit(f"--ab: {args.ab!r} is not batch_cost=A,B,...")
    names = list(jobs)
    for name in names:
        jobs[name]()  # trace every shape
    rates = {name: [] for name in names}
    for round_ in range(args.rounds):
        for name in names[round_ % len(names) :] + names[: round_ % len(names)]:
            start = time.perf_counter()
            jobs[name]()
            rates[name].append(len(texts) / (time.perf_counter() - start))
        print(
            f"round {round_ + 1}: " + ", ".join(f"{n} {rates[n][-1]:.1f}/s" for n in names),
            flush=True,
        )
    result = {
        "cpu": cpu_description(),
        "rounds": args.rounds,
        "examples_per_second": {n: [round(r, 1) for r in rates[n]] for n in names},
        "ratios": {},
    }
    for name in names[1:]:
        ratios = [a / b for a, b in zip(rates[names[0]], rates[name])]
        result["ratios"][f"{names[0]} / {name}"] = {
            "each": [round(r, 3) for r in ratios],
            "median": round(statistics.median(ratios), 3),
            "all_above_1": all(r > 1 for r in ratios),
        }
        print(
            f"{names[0]} against {name}: median {statistics.median(ratios):.3f}x, "
            f"each {', '.join(f'{r:.3f}' for r in ratios)}",
            flush=True,
        )
    print("RESULT " + json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
