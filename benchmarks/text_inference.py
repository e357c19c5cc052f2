"""Text inference speed of a finished sentiment run: `predict` and `evaluate` examples/s.

    python benchmarks/text_inference.py RUN_DIR DATA.tsv [--text-column sentence] [--repeats 3]

Loads the run as `keras-zoo predict/evaluate` do, runs each once to trace, then times `--repeats`
passes over all rows and prints the median examples/s:
- predict: class probabilities (`zoo.text_inputs.predict_probabilities`, what `keras-zoo predict` runs);
- evaluate: the recipe's whole evaluation (`keras-zoo evaluate` minus writing its files: the
  probabilities, the report, the confusion matrix, the sentence vectors for the projector).
`benchmarks/peers.py sst2` runs it on each keras-zoo run, beside the peer's own inference figure
(its loop over the same sentences, batch 64, sorted by length).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

from common import ROOT  # noqa: F401,E402  (benchmarks/common.py puts the repository on sys.path)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("run")
    parser.add_argument("data")
    parser.add_argument("--text-column", default="sentence")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    from zoo.runtime import prefer_inference_kernels

    prefer_inference_kernels()  # as `keras-zoo predict` and `evaluate` do, before TensorFlow loads
    from recipes import engine, sentiment
    from recipes.text_data import read_texts
    from zoo.text_inputs import predict_probabilities

    _, cfg, predictor = engine.open_finished(sentiment.RECIPE, args.run)
    data = read_texts(args.data, "validation", args.text_column, cfg.data.label_column)
    figures = {}
    for name, job in (("predict", lambda: predict_probabilities(predictor.model, predictor.encoder, data.texts)),
                      ("evaluate", lambda: sentiment.RECIPE.evaluate(predictor, data, "validation", cfg))):
        job()  # trace
        rates = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            job()
            rates.append(len(data) / (time.perf_counter() - start))
        figures[f"{name}_examples_per_second"] = round(statistics.median(rates), 1)
    print("RESULT " + json.dumps(figures), flush=True)


if __name__ == "__main__":
    main()
