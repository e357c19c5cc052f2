"""The `keras-zoo` command line. Heavy libraries are imported only by the commands that need them,
so `keras-zoo --help` and `keras-zoo list` answer at once."""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
from typing import Sequence

from zoo.errors import UserError

RECIPES = {"sentiment": "recipes.sentiment", "image_classification": "recipes.image_classification",
           "ner": "recipes.ner"}


def _recipe(name: str):
    if name not in RECIPES:
        from zoo.errors import closest  # noqa: PLC0415

        raise UserError(f"unknown recipe '{name}'{closest(name, RECIPES)}; recipes: {', '.join(RECIPES)}")
    return importlib.import_module(RECIPES[name])


def build_parser(recipe: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="keras-zoo" if recipe is None else f"python -m recipes.{recipe}",
        description="Fine-tune pretrained KerasHub backbones: train, evaluate, predict, export.")
    commands = parser.add_subparsers(dest="command", required=True)

    def add(name: str, help: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help, description=help)
        if recipe is None:
            sub.add_argument("recipe", help=f"one of: {', '.join(RECIPES)}")
        return sub

    if recipe is None:
        commands.add_parser("list", help="print the backbone catalog")
    train = add("train", "train a recipe into runs/<recipe>/<name>/")
    train.add_argument("--config", help="YAML config file (sections data, model, train, run)")
    train.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                       help="override a config key, e.g. --set train.learning_rate=3e-5 (repeatable)")
    train.add_argument("--name", help="run name (default: a timestamp); same as --set run.name=...")
    train.add_argument("--runs-dir", help="where runs go (default: runs); same as --set run.runs_dir=...")
    mode = train.add_mutually_exclusive_group()
    mode.add_argument("--overwrite", action="store_true", help="replace an existing run of the same name")
    mode.add_argument("--resume", action="store_true", help="continue an interrupted run from its last epoch")
    evaluate = add("evaluate", "evaluate a finished run")
    evaluate.add_argument("run", help="run directory")
    evaluate.add_argument("--data", default="", help="labelled data (default: the run's validation data)")
    evaluate.add_argument("--split", default="validation", choices=["train", "validation", "test"])
    predict = add("predict", "predict labels for texts or image files")
    predict.add_argument("run", help="run directory")
    predict.add_argument("inputs", nargs="*", help="texts (sentiment, ner), or image files and folders (images)")
    predict.add_argument("--tokens", action="store_true",
                         help="ner: each input is already tokenised (tokens separated by whitespace)")
    predict.add_argument("--file", help="a text file, one input per line")
    predict.add_argument("--jsonl", action="store_true", help="print one JSON object per input")
    predict.add_argument("--csv", help="also write the predictions to this CSV file")
    export = add("export", "write export/model.keras and export/saved_model for a run")
    export.add_argument("run", help="run directory")
    return parser


def run_command(args: argparse.Namespace, recipe_name: str) -> None:
    recipe = _recipe(recipe_name)
    if args.command == "train":
        overrides = list(args.overrides)
        if args.name:
            overrides.append(f"run.name={args.name}")
        if args.runs_dir:
            overrides.append(f"run.runs_dir={args.runs_dir}")
        cfg = recipe.load_config(args.config, overrides)
        run, report = recipe.train(cfg, overwrite=args.overwrite, resume=args.resume, verbose=2)
        format_report = _report_formatter(recipe)
        for split in ("validation", "test"):
            if split in report:
                print(f"\n{split} metrics:\n{format_report(report[split])}")
        print(f"\nrun directory: {run.path}")
        print(f"TensorBoard:   tensorboard --logdir {run.logs}")
    elif args.command == "evaluate":
        print(_report_formatter(recipe)(recipe.evaluate(args.run, args.data, args.split)))
    elif args.command == "predict":
        _predict(recipe, args)
    elif args.command == "export":
        from recipes.run_dir import open_run  # noqa: PLC0415

        print(f"exported: {recipe.export_run(open_run(args.run))}")


def _report_formatter(recipe):
    """The recipe's own report table (entity metrics for NER), else the classification table."""
    from recipes.metrics import format_report  # noqa: PLC0415

    return getattr(recipe, "format_report", format_report)


def _predict(recipe, args: argparse.Namespace) -> None:
    from pathlib import Path  # noqa: PLC0415

    inputs = list(args.inputs)
    if args.file:
        from recipes.text_data import read_lines  # noqa: PLC0415

        if not Path(args.file).is_file():
            raise UserError(f"{args.file}: file not found")
        inputs += [line for line in read_lines(Path(args.file)) if line.strip()]
    if not inputs:
        raise UserError("predict: give inputs as arguments or --file FILE")
    if args.csv and Path(args.csv).exists():
        raise UserError(f"{args.csv}: exists; choose another --csv file")
    if args.tokens and not hasattr(recipe, "format_prediction"):
        raise UserError(f"--tokens: only for token classification (ner), not {recipe.NAME}")
    rows = recipe.predict(args.run, inputs, pretokenized=True) if args.tokens else recipe.predict(args.run, inputs)
    for row in rows:
        subject = row.get("text", row.get("path"))
        if args.jsonl:
            print(json.dumps(row, ensure_ascii=False))
        elif hasattr(recipe, "format_prediction"):
            print(recipe.format_prediction(row))
        elif row["label"] is None:
            print(f"-\t-\t{subject}\t({row.get('error', 'no prediction')})")
        else:
            print(f"{row['label']}\t{row['probabilities'][row['label']]:.4f}\t{subject}")
    if args.csv:
        import csv  # noqa: PLC0415

        with open(args.csv, "w", newline="") as f:
            writer = csv.writer(f)
            if rows and "entities" in rows[0]:  # token classification: a row per entity
                writer.writerow(["input", "entity", "type", "start", "end", "score"])
                for row in rows:
                    for e in row["entities"]:
                        writer.writerow([row["text"], e["text"], e["type"], e["start"], e["end"], e["score"]])
            else:
                writer.writerow(["input", "label", "probability", "error"])
                for row in rows:
                    p = row["probabilities"][row["label"]] if row["label"] is not None else ""
                    writer.writerow([row.get("text", row.get("path")), row["label"] or "", p, row.get("error", "")])
        print(f"predictions written to {args.csv}")


def main(argv: Sequence[str] | None = None, recipe: str | None = None) -> int:
    args = build_parser(recipe).parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        if args.command == "list":
            from zoo.catalog import format_catalog  # noqa: PLC0415

            print(format_catalog())
        else:
            run_command(args, recipe or args.recipe)
    except UserError as e:
        print(f"keras-zoo: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("keras-zoo: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
