"""A recipe as a script: `python -m recipes.<name> train | evaluate | predict | export`.

The `keras-zoo` command (keras_zoo_cli) builds on the same parser pieces and adds `tune`,
`tensorboard` and `list`. Heavy libraries are imported only by the commands that need them.
"""

from __future__ import annotations

import argparse
import csv
import errno
import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from recipes import engine  # light: its functions load TensorFlow when first used
from recipes.engine.config import check_config, load_config_and_keys
from recipes.engine.launch import run_local_cluster, without_option
from recipes.engine.registry import RECIPES, load_recipe
from recipes.engine.run_dir import plan_training_run
from zoo.errors import UserError
from zoo.runtime import prefer_inference_kernels, prepare_command_process


def add_config_options(sub: argparse.ArgumentParser, what: str) -> None:
    """--config, --set, --name, --runs-dir, --overwrite | --resume (train and tune)."""
    sub.add_argument("--config", help="YAML config file (sections data, model, train, run, tuning)")
    sub.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config key, e.g. --set train.learning_rate=3e-5 (repeatable)",
    )
    sub.add_argument(
        "--name", help=f"{what} name (default: a timestamp); same as --set run.name=..."
    )
    sub.add_argument(
        "--runs-dir", help="where runs go (default: runs); same as --set run.runs_dir=..."
    )
    mode = sub.add_mutually_exclusive_group()
    mode.add_argument(
        "--overwrite",
        action="store_true",
        help=f"replace an existing {what} of the same name (the old one stays until the new one finishes)",
    )
    mode.add_argument(
        "--resume",
        action="store_true",
        help=f"continue an interrupted {what}; only run.* keys may change",
    )


def add_recipe_commands(commands, recipe_argument: bool) -> None:
    """The train / evaluate / predict / export subcommands; `recipe_argument` adds a RECIPE positional."""

    def add(name: str, help: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help, description=help)
        if recipe_argument:
            sub.add_argument(
                "recipe", help=f"one of: {', '.join(RECIPES)}, or a module path (my_pkg.my_recipe)"
            )
        return sub

    train = add("train", "train a recipe into runs/<recipe>/<name>/")
    add_config_options(train, "run")
    if recipe_argument:  # keras-zoo: it restarts itself as the workers
        train.add_argument(
            "--workers",
            type=int,
            default=0,
            metavar="N",
            help="train as a cluster of N processes on this machine (MultiWorkerMirroredStrategy; "
            "one GPU each where there are GPUs); see README, 'Training on GPUs and clusters'",
        )
    train.add_argument(
        "--profile",
        action="store_true",
        help="profile a few training steps for TensorBoard's Profile tab (pip install 'keras-zoo[profile]' "
        "to view); same as --set run.profile=true",
    )
    evaluate = add("evaluate", "evaluate a finished run")
    evaluate.add_argument("run", help="run directory")
    evaluate.add_argument(
        "--data", default="", help="labelled data (default: the run's own data for --split)"
    )
    evaluate.add_argument("--split", default="validation", choices=["train", "validation", "test"])
    predict = add("predict", "predict labels for texts or image files")
    predict.add_argument("run", help="run directory")
    predict.add_argument(
        "inputs", nargs="*", help="texts (sentiment, ner), or image files and folders (images)"
    )
    predict.add_argument(
        "--tokens",
        action="store_true",
        help="ner: each input is already tokenised (tokens separated by whitespace)",
    )
    predict.add_argument("--file", help="a text file, one input per line")
    predict.add_argument("--jsonl", action="store_true", help="print one JSON object per input")
    predict.add_argument("--csv", help="also write the predictions to this CSV file")
    export = add(
        "export", "write export/model.keras and export/saved_model for a run, or a KerasHub preset"
    )
    export.add_argument("run", help="run directory")
    export.add_argument(
        "--preset",
        metavar="DIR",
        help="write a KerasHub preset directory instead (to share with keras_hub.upload_preset)",
    )


def config_overrides(args: argparse.Namespace) -> list[str]:
    """`--set` values plus the options that are shorthands for config keys."""
    overrides = list(args.overrides)
    shorthands = {"name": "run.name", "runs_dir": "run.runs_dir"}
    for option, key in shorthands.items():
        if getattr(args, option, None) is not None:
            overrides.append(f"{key}={getattr(args, option)}")
    if getattr(args, "profile", False):
        overrides.append("run.profile=true")
    return overrides


def run_recipe_command(recipe, args: argparse.Namespace) -> None:
    """Carry out train / evaluate / predict / export for `recipe` (a `recipes.engine.contract.Recipe`)."""
    if args.command == "train":
        # A bad key, value or run place is said at once, not after TensorFlow's start-up.
        cfg, keys = load_config_and_keys(recipe.config_class, args.config, config_overrides(args))
        check_config(cfg)
        # (the engine plans again)
        plan_training_run(cfg.run, recipe.name, overwrite=args.overwrite, resume=args.resume)
        if getattr(args, "workers", 0) and cfg.train.distribute in ("none", "mirrored"):
            raise UserError(
                f"--workers: train.distribute is {cfg.train.distribute}; "
                "workers train with multi_worker (or auto)"
            )
    else:
        prefer_inference_kernels()
    if args.command == "train":
        if getattr(args, "workers", 0):
            _train_workers(recipe, cfg, args)
            return
        run, report = engine.train(
            recipe,
            cfg,
            overwrite=args.overwrite,
            resume=args.resume,
            changed_keys=keys,
            verbose=1 if sys.stdout.isatty() else 2,
            origin=_origin(args),
        )
        if not report:  # a worker of a cluster other than the chief: the chief reports
            print("this worker's part is done; the chief writes the run")
            return
        for split in ("validation", "test"):
            if split in report:
                print(f"\n{split} metrics:\n{recipe.format_report(report[split])}")
        print(f"\n{kept_epoch_line(report)}")
        print(f"run directory: {run.path}")
        print(f"TensorBoard:   keras-zoo tensorboard {run.path}")
    elif args.command == "evaluate":
        print(recipe.format_report(engine.evaluate(recipe, args.run, args.data, args.split)))
    elif args.command == "predict":
        _predict(recipe, args)
    elif args.command == "export":
        if args.preset is not None:
            print(f"preset written: {engine.export_preset(recipe, args.run, args.preset)}")
        else:
            print(f"exported: {engine.export(recipe, args.run)}")


def _train_workers(recipe, cfg, args: argparse.Namespace) -> None:
    """`train --workers N` (checked in `run_recipe_command`): run this same command as N workers."""
    if not cfg.run.name and not cfg.run.dir:  # one timestamp for all workers, not one each
        args.argv = [*args.argv, "--name", time.strftime("%Y%m%d-%H%M%S")]
    # the workers' model card: this command
    os.environ[ORIGIN_VARIABLE] = json.dumps(getattr(args, "origin", ""))
    try:
        run_local_cluster(
            [sys.executable, "-m", "keras_zoo_cli", *without_option(args.argv, "--workers")],
            args.workers,
        )
    finally:
        del os.environ[ORIGIN_VARIABLE]


ORIGIN_VARIABLE = "KERAS_ZOO_ORIGIN"


def _origin(args: argparse.Namespace) -> list[str] | str:
    """The command that started the run, for its model card (`train --workers N` passes its own to the workers)."""
    inherited = os.environ.get(ORIGIN_VARIABLE)
    return json.loads(inherited) if inherited else getattr(args, "origin", "")


def _predict(recipe, args: argparse.Namespace) -> None:
    inputs = list(args.inputs)
    if args.file:
        from recipes.common.text_data import read_lines

        if not Path(args.file).is_file():
            raise UserError(f"{args.file}: file not found")
        inputs += [line for line in read_lines(Path(args.file)) if line.strip()]
    if args.csv and Path(args.csv).exists():
        raise UserError(f"{args.csv}: exists; choose another --csv file")
    rows = engine.predict(recipe, args.run, inputs, pretokenized=args.tokens)
    for row in rows:
        print(json.dumps(row, ensure_ascii=False) if args.jsonl else recipe.format_prediction(row))
    if args.csv:
        header, table = recipe.prediction_table(rows)
        with open(args.csv, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(header)
            writer.writerows(table)
        print(f"predictions written to {args.csv}")


def kept_epoch_line(report: dict) -> str:
    """Which epoch the run kept, where it was chosen, and the last epoch's figures beside it."""
    chosen, last = report["chosen_epoch"], report["last_epoch"]
    line = f"kept epoch {chosen['epoch']} of {chosen['of']} (best {chosen['monitor']} on {chosen['chosen_on']})"
    if chosen["chosen_on"] == "none":
        line = f"kept the last epoch ({chosen['of']}): a fixed budget, nothing chosen on validation data"
    if chosen["chosen_on"] == "validation" and "test" not in report:
        line += ": its validation figures are optimistic; data.selection_split chooses on held-out training data"
    figures = [
        f"{split} {key} {last[split][key]:.4f}"
        for split in ("validation", "test")
        if split in last
        for key in ("accuracy", "f1")
        if key in last[split]
    ]
    if chosen["epoch"] != chosen["of"] and figures:
        line += f"\nlast epoch ({chosen['of']}): " + ", ".join(figures)
    return line


def guarded(command) -> int:
    """Run `command()`: a user error is one line on stderr and exit status 2, Ctrl-C exit 130. So is
    a file the user may not write (or read) there: a read-only runs folder, say."""
    try:
        command()
    except UserError as e:
        print(f"keras-zoo: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        if e.errno not in (errno.EACCES, errno.EPERM, errno.EROFS):
            raise
        print(
            f"keras-zoo: error: {e.filename}: {e.strerror.lower()} (nothing was changed there)",
            file=sys.stderr,
        )
        return 2
    except KeyboardInterrupt:
        print("keras-zoo: interrupted", file=sys.stderr)
        return 130
    return 0


def parse_command_line(
    parser: argparse.ArgumentParser, argv: Sequence[str] | None
) -> argparse.Namespace:
    """`parser.parse_args(argv)`, except that `predict` also takes texts and files given after its
    options (`predict RUN --jsonl "a fine film"`), which argparse leaves unrecognised."""
    args, extra = parser.parse_known_args(argv)
    if (
        extra
        and getattr(args, "command", None) == "predict"
        and not any(item.startswith("-") for item in extra)
    ):
        args.inputs = [*args.inputs, *extra]
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    return args


def script_main(recipe, argv: Sequence[str] | None = None) -> int:
    """`python -m recipes.<name>` (each task's `__main__`): the recipe's own command line.
    `recipe`: a `Recipe`, or a registered recipe's name, whose module (and TensorFlow) loads only
    after the process settings are applied: called with no `argv` it is that program, and applies
    them first (zoo/runtime.py `prepare_command_process`)."""
    name = recipe if isinstance(recipe, str) else recipe.name
    parser = argparse.ArgumentParser(
        prog=f"python -m recipes.{name}",
        description=f"The {name} recipe: train, evaluate, predict, export.",
    )
    add_recipe_commands(parser.add_subparsers(dest="command", required=True), recipe_argument=False)
    args = parse_command_line(parser, argv)
    args.origin = ["python", "-m", f"recipes.{name}", *(sys.argv[1:] if argv is None else argv)]
    if argv is None:
        prepare_command_process()
    return guarded(
        lambda: run_recipe_command(load_recipe(recipe) if isinstance(recipe, str) else recipe, args)
    )
