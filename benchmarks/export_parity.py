"""Exported SavedModel vs the run's Keras model on a labelled file, the SavedModel in a fresh process
that imports only tensorflow and tensorflow_text.

    python benchmarks/export_parity.py RUN_DIR ../shared/data/sst2/dev.tsv --text-column sentence
"""

import argparse
import json
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

SERVE = """
import json, sys, tensorflow as tf, tensorflow_text
texts = json.loads(sys.stdin.read())
serve = tf.saved_model.load(sys.argv[1]).signatures["serving_default"]
assert not any(m.split(".")[0] in ("keras_hub", "zoo", "recipes") for m in sys.modules)
print(json.dumps(serve(text=tf.constant(texts))["probabilities"].numpy().tolist()))
"""


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("run")
    parser.add_argument("data")
    parser.add_argument("--text-column", default="text")
    args = parser.parse_args()
    import numpy as np

    from recipes import engine, sentiment
    from recipes.common.text_data import read_texts

    texts = read_texts(args.data, "validation", args.text_column, None).texts
    rows = engine.predict(sentiment.RECIPE, args.run, texts)
    labels = list(rows[0]["probabilities"])
    keras_p = np.array([[r["probabilities"][k] for k in labels] for r in rows])
    out = subprocess.run(
        [sys.executable, "-c", SERVE, str((Path(args.run) / "export" / "saved_model").resolve())],
        input=json.dumps(texts),
        capture_output=True,
        text=True,
        check=True,
        cwd="/",
    )
    served = np.array(json.loads(out.stdout.splitlines()[-1]))
    print(
        json.dumps(
            {
                "examples": len(texts),
                "max_abs_difference": float(np.abs(served - keras_p).max()),
                "top1_agreement": float((served.argmax(1) == keras_p.argmax(1)).mean()),
            }
        )
    )


if __name__ == "__main__":
    main()
