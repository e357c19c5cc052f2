"""CoNLL-2003 English NER with the default NER config and MiniLM-L6-H384 (uncased).

    python benchmarks/ner_conll2003.py [--out benchmarks/out/conll2003] [--set KEY=VALUE ...] [--reuse-run]

Trains on train.txt (validation: valid.txt, the best epoch by validation entity F1 is kept) and
reports dev and test entity precision/recall/F1 (micro and per type), training sentences per
second per epoch, inference sentences per second, wall time and peak memory. Then checks, on the
recipe's own test-set predictions:
- the entity metrics against the `seqeval` package (default mode), to 4 decimal places;
- the exported SavedModel, in a fresh process importing only tensorflow and tensorflow_text,
  against the Keras model: the same tags on every test sentence (`tag_tokens` signature), and on
  the test sentences as raw text (`serving_default`), with offsets that slice the text.
Needs ../shared. Not a test.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from common import SHARED, benchmark_parser, peak_rss_gib

DATA = SHARED / "data" / "conll2003"
WEIGHTS = SHARED / "pretrained" / "minilm-l6-h384-uncased"


def main() -> None:
    parser = benchmark_parser("conll2003")
    args = parser.parse_args()
    if not DATA.exists() or not WEIGHTS.exists():
        raise SystemExit(f"needs {DATA} and {WEIGHTS}")

    import keras
    from seqeval.metrics import classification_report, f1_score, precision_score, recall_score

    from recipes import engine, ner
    from recipes.engine.run_dir import open_finished_run
    from recipes.ner import tags as ner_tags
    from recipes.ner.data import normalise_tags, read_tagged
    from recipes.ner.token_inputs import Tagger

    cfg = ner.RECIPE.load_config(
        overrides=[
            f"data.train={DATA / 'train.txt'}",
            f"data.validation={DATA / 'valid.txt'}",
            f"data.test={DATA / 'test.txt'}",
            f"model.backbone={WEIGHTS}",
            f"run.runs_dir={args.out}",
            "run.name=recipe",
            *args.overrides,
        ]
    )
    start = time.perf_counter()
    # the training figures are in that invocation's output; evaluate and export again
    if args.reuse_run:
        run = open_finished_run(Path(args.out) / ner.RECIPE.name / "recipe")
        report = {
            "validation": engine.evaluate(
                ner.RECIPE, run.path, str(DATA / "valid.txt"), "validation"
            ),
            "test": engine.evaluate(ner.RECIPE, run.path, str(DATA / "test.txt"), "test"),
            "train_examples_per_second": None,
        }
        engine.export(ner.RECIPE, run.path)
    else:
        run, report = engine.train(ner.RECIPE, cfg, overwrite=True, verbose=2)
    wall = time.perf_counter() - start

    def summary(r):
        return {
            "f1": r["f1"],
            "precision": r["precision"],
            "recall": r["recall"],
            "token_accuracy": r["token_accuracy"],
            "per_type_f1": {t: round(v["f1"], 4) for t, v in r["per_type"].items()},
        }

    result = {
        "validation": summary(report["validation"]),
        "test": summary(report["test"]),
        "train_sentences_per_second_per_epoch": report["train_examples_per_second"],
        "recipe_wall_seconds": None if args.reuse_run else wall,
        "recipe_peak_rss_gib": None if args.reuse_run else peak_rss_gib(),
        "precision": keras.mixed_precision.global_policy().name,
        "task": json.loads(run.task.read_text()),
    }
    print(json.dumps(result, indent=2), flush=True)

    # Inference: the run's float32 model through the same windowed graph the SavedModel uses.
    _, _, tagger = engine.open_finished(ner.RECIPE, run.path)
    test = read_tagged(str(DATA / "test.txt"), "test")
    normalise_tags(test, "IOB2")
    tagger(test.tokens[:64])  # trace once
    t0 = time.perf_counter()
    predicted, _ = tagger(test.tokens)
    infer = time.perf_counter() - t0
    result["inference_sentences_per_second"] = len(test) / infer
    # What constrained decoding brings, on the same model: each word's most probable tag instead.
    greedy, _ = Tagger(tagger.model, tagger.encoder, tagger.tags, constrained=False)(test.tokens)
    result["test_f1_argmax_decoding"] = ner_tags.entity_report(test.tags, greedy)["f1"]

    # Entity metrics against seqeval on these predictions (each sentence alone, as `predict` and the
    # SavedModel tag a sentence given alone; the recipe's report tags it beside its document neighbours).
    ours = ner_tags.entity_report(test.tags, predicted)
    result["test_f1_each_sentence_alone"] = ours["f1"]
    result["test_f1_argmax_decoding_in_context"] = ner_tags.entity_report(
        test.tags,
        ner.tag_in_context(
            Tagger(tagger.model, tagger.encoder, tagger.tags, constrained=False),
            test,
            cfg.data.document_context,
        )[0],
    )["f1"]
    theirs = {
        "f1": f1_score(test.tags, predicted),
        "precision": precision_score(test.tags, predicted),
        "recall": recall_score(test.tags, predicted),
    }
    per_type = classification_report(test.tags, predicted, output_dict=True)
    diffs = [abs(ours[k] - theirs[k]) for k in theirs]
    diffs += [abs(v["f1"] - per_type[t]["f1-score"]) for t, v in ours["per_type"].items()]
    result["seqeval"] = {
        **{k: round(v, 6) for k, v in theirs.items()},
        "max_abs_difference": max(diffs),
        "equal_to_4_decimals": all(round(d, 4) == 0 for d in diffs),
        "recipe_report_f1": report["test"]["f1"],
    }

    # The SavedModel in a fresh process: every test sentence, pre-tokenised and as raw text.
    texts = [" ".join(tokens) for tokens in test.tokens]
    raw_rows = engine.predict(ner.RECIPE, run.path, texts)
    work = Path(args.out) / "export_check"
    work.mkdir(parents=True, exist_ok=True)
    (work / "input.json").write_text(json.dumps({"tokens": test.tokens, "texts": texts}))
    script = textwrap.dedent(f"""
        import json, sys
        import tensorflow as tf, tensorflow_text  # noqa: F401
        data = json.load(open({str(work / "input.json")!r}))
        model = tf.saved_model.load({str(run.path / "export" / "saved_model")!r})
        tags, raw = [], []
        for i in range(0, len(data["tokens"]), 64):
            batch = data["tokens"][i:i + 64]
            width = max(len(t) for t in batch)
            out = model.signatures["tag_tokens"](tokens=tf.constant([t + [""] * (width - len(t)) for t in batch]))
            tags += [[t.decode() for t in row[:n]] for row, n in zip(out["tags"].numpy(), out["num_words"].numpy())]
            out = model.signatures["serving_default"](text=tf.constant(data["texts"][i:i + 64]))
            for text, ts, s, e, n in zip(data["texts"][i:i + 64], out["tags"].numpy(), out["starts"].numpy(),
                                         out["ends"].numpy(), out["num_words"].numpy()):
                raw.append({{"tags": [t.decode() for t in ts[:n]], "words": [text[a:b] for a, b in zip(s[:n], e[:n])]}})
        assert not any(m.split(".")[0] in ("keras_hub", "keras_nlp", "zoo", "recipes") for m in sys.modules)
        json.dump({{"tags": tags, "raw": raw}}, open({str(work / "served.json")!r}, "w"))
    """)
    subprocess.run([sys.executable, "-c", script], check=True)
    served = json.loads((work / "served.json").read_text())
    same = sum(a == b for a, b in zip(served["tags"], predicted))
    same_raw = sum(
        a["tags"] == b["tags"] and a["words"] == b["tokens"]
        for a, b in zip(served["raw"], raw_rows)
    )
    offsets_ok = all(
        r["text"][e["start"] : e["end"]] == e["text"] for r in raw_rows for e in r["entities"]
    )
    result["savedmodel"] = {
        "sentences": len(test),
        "same_tags_pretokenised": same,
        "same_tags_raw_text": same_raw,
        "entity_offsets_slice_text": offsets_ok,
    }
    print(
        json.dumps(
            {
                k: result[k]
                for k in (
                    "inference_sentences_per_second",
                    "test_f1_argmax_decoding",
                    "seqeval",
                    "test_f1_each_sentence_alone",
                    "test_f1_argmax_decoding_in_context",
                    "savedmodel",
                )
            },
            indent=2,
        )
    )
    (Path(args.out) / "result.json").write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
