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


def load_recipe(name: str):
    """A recipe module: one of RECIPES by name, or your own by its import path (my_package.my_recipe)."""
    if name in RECIPES:
        return importlib.import_module(RECIPES[name])
    if "." in name:
        try:
            return importlib.import_module(name)
        except ModuleNotFoundError as e:
            raise UserError(f"recipe module '{name}' not found ({e})") from None
    from zoo.errors import closest  # noqa: PLC0415

    raise UserError(f"unknown recipe '{name}'{closest(name, RECIPES)}; recipes: {', '.join(RECIPES)}")


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
        board = commands.add_parser("tensorboard", help="serve TensorBoard over runs (127.0.0.1 only by default)",
                                    description="Serve TensorBoard over a runs directory (every run, trial and search "
                                                "in it) until Ctrl-C.")
        board.add_argument("runs_dir", nargs="?", default="runs", metavar="RUNS_DIR", help="default: runs")
        board.add_argument("--port", type=int, default=0, help="default: a free port")
        board.add_argument("--host", default="127.0.0.1",
                           help="address to listen on (default 127.0.0.1); e.g. 0.0.0.0 exposes the runs to your "
                                "network, without authentication")
    def add_config_options(sub: argparse.ArgumentParser, what: str) -> None:
        sub.add_argument("--config", help="YAML config file (sections data, model, train, run, tuning)")
        sub.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                         help="override a config key, e.g. --set train.learning_rate=3e-5 (repeatable)")
        sub.add_argument("--name", help=f"{what} name (default: a timestamp); same as --set run.name=...")
        sub.add_argument("--runs-dir", help="where runs go (default: runs); same as --set run.runs_dir=...")
        mode = sub.add_mutually_exclusive_group()
        mode.add_argument("--overwrite", action="store_true", help=f"replace an existing {what} of the same name")
        mode.add_argument("--resume", action="store_true", help=f"continue an interrupted {what}")

    train = add("train", "train a recipe into runs/<recipe>/<name>/")
    add_config_options(train, "run")
    train.add_argument("--profile", action="store_true",
                       help="profile a few training steps for TensorBoard's Profile tab (pip install 'keras-zoo[profile]' "
                            "to view); same as --set run.profile=true")
    tune = add("tune", "search the config's tuning.space with Keras Tuner into runs/<recipe>/<name>/")
    add_config_options(tune, "search")
    tune.add_argument("--dir", help="the search directory (default: runs/<recipe>/<name>); shared by all hosts")
    tune.add_argument("--max-time", help="start no trial after this long, e.g. 90m, 2h; same as --set tuning.max_time=...")
    tune.add_argument("--role", choices=["single", "chief", "worker"], default="single",
                      help="distributed search: run the same command with --role chief on one host, --role worker on others")
    tune.add_argument("--host", help="chief's address (default: $KERASTUNER_ORACLE_IP or 127.0.0.1); "
                                     "the gRPC channel is unauthenticated: expose it only on a trusted network")
    tune.add_argument("--port", type=int, help="chief's port (default: $KERASTUNER_ORACLE_PORT or 8000)")
    tune.add_argument("--workers", type=int, default=0, metavar="N",
                      help="start a chief here and N workers on this machine (one per GPU where there are GPUs)")
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
    recipe = load_recipe(recipe_name)
    if args.command in ("train", "tune"):
        overrides = list(args.overrides)
        if args.name:
            overrides.append(f"run.name={args.name}")
        if args.runs_dir:
            overrides.append(f"run.runs_dir={args.runs_dir}")
        if getattr(args, "max_time", None):
            overrides.append(f"tuning.max_time={args.max_time}")
        if getattr(args, "profile", False):
            overrides.append("run.profile=true")
        cfg = recipe.load_config(args.config, overrides)
    if args.command == "tune":
        _tune(recipe_name, cfg, args)
    elif args.command == "train":
        run, report = recipe.train(cfg, overwrite=args.overwrite, resume=args.resume, verbose=2)
        format_report = _report_formatter(recipe)
        for split in ("validation", "test"):
            if split in report:
                print(f"\n{split} metrics:\n{format_report(report[split])}")
        print(f"\nrun directory: {run.path}")
        print(f"TensorBoard:   keras-zoo tensorboard {run.path}")
    elif args.command == "evaluate":
        print(_report_formatter(recipe)(recipe.evaluate(args.run, args.data, args.split)))
    elif args.command == "predict":
        _predict(recipe, args)
    elif args.command == "export":
        from recipes.run_dir import open_run  # noqa: PLC0415

        print(f"exported: {recipe.export_run(open_run(args.run))}")


def _tune(recipe_name: str, cfg, args: argparse.Namespace) -> None:
    from tuning import tune  # noqa: PLC0415
    from tuning.results import format_table  # noqa: PLC0415

    if args.workers and args.role != "single":
        raise UserError("--workers starts its own chief and workers; leave out --role")
    result = tune(recipe_name, cfg, args.dir, resume=args.resume, overwrite=args.overwrite, role=args.role,
                  host=args.host, port=args.port, workers=args.workers)
    if result is None:  # a worker: the chief reports
        print("worker: no more trials")
        return
    print(f"\n{format_table(result)}\n")
    print(f"results:     {result.search.results_csv} (and .json)")
    if result.best is not None:
        print(f"best config: {result.search.best_config}  (keras-zoo train {recipe_name} --config {result.search.best_config})")
    print(f"TensorBoard: keras-zoo tensorboard {result.search.path}")


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
        elif args.command == "tensorboard":
            from recipes.board import serve  # noqa: PLC0415

            serve(args.runs_dir, host=args.host, port=args.port)
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
