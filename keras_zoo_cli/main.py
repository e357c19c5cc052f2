"""`keras-zoo`: every recipe's commands (recipes/engine/cli.py), a hyperparameter search (`tune`),
TensorBoard over the runs (`tensorboard`) and the backbone catalog (`list`). Heavy libraries are
imported only by the commands that need them, so `keras-zoo --help` and `keras-zoo list` answer at once."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from recipes.engine.cli import (
    add_config_options,
    add_recipe_commands,
    config_overrides,
    guarded,
    parse_command_line,
    run_recipe_command,
)
from recipes.engine.config import check_config
from recipes.engine.registry import load_recipe
from zoo.catalog import TASKS, format_catalog
from zoo.errors import UserError
from zoo.runtime import prepare_command_process


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="keras-zoo",
        description="Fine-tune pretrained KerasHub backbones: train, evaluate, predict, export.",
    )
    parser.add_argument(
        "--verbose",
        action="store_true",
        help="show TensorFlow's C++ start-up lines and INFO/WARNING logs (same as KERAS_ZOO_VERBOSE=1)",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("list", help="print the backbone catalog").add_argument(
        "--task", choices=TASKS, help="only the backbones that suit this recipe"
    )
    board = commands.add_parser(
        "tensorboard",
        help="serve TensorBoard over runs (127.0.0.1 only by default)",
        description="Serve TensorBoard over a runs directory (every run, trial and search "
        "in it) until Ctrl-C.",
    )
    board.add_argument(
        "runs_dir", nargs="?", default="runs", metavar="RUNS_DIR", help="default: runs"
    )
    board.add_argument("--port", type=int, default=0, help="default: a free port")
    board.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on (default 127.0.0.1); e.g. 0.0.0.0 exposes the runs to your "
        "network, without authentication",
    )
    runs = commands.add_parser(
        "runs",
        help="a table of the runs and searches (--delete NAME ... removes some)",
        description="One line per run and search under the runs directory: status, "
        "backbone, epochs, key metrics, duration, date.",
    )
    runs.add_argument(
        "patterns",
        nargs="*",
        metavar="PATTERN",
        help="globs or run directories, e.g. 'runs/sentiment/*' (default: all of --runs-dir)",
    )
    runs.add_argument("--runs-dir", default="runs", help="default: runs")
    runs.add_argument(
        "--sort",
        metavar="METRIC",
        help="best first by this metric, e.g. val_accuracy, test_macro_f1",
    )
    runs.add_argument(
        "--json", action="store_true", help="print the rows as JSON, every metric included"
    )
    runs.add_argument(
        "--delete",
        nargs="+",
        metavar="NAME",
        help="delete these finished, failed or interrupted runs or searches (names under --runs-dir, "
        "or paths); nothing is deleted when one is refused",
    )
    show = commands.add_parser("show", help="print a run's report, or a search's results table")
    show.add_argument(
        "run", metavar="RUN", help="a run or search: its name under --runs-dir, or its path"
    )
    show.add_argument("--runs-dir", default="runs", help="default: runs")
    add_recipe_commands(commands, recipe_argument=True)
    tune = commands.add_parser(
        "tune",
        help="search the config's tuning.space with Keras Tuner into runs/<recipe>/<name>/",
        description="Search the config's tuning.space with Keras Tuner.",
    )
    tune.add_argument("recipe", help="a recipe name, or a module path (my_pkg.my_recipe)")
    add_config_options(tune, "search")
    tune.add_argument(
        "--dir", help="the search directory (default: runs/<recipe>/<name>); shared by all hosts"
    )
    tune.add_argument(
        "--max-time",
        help="start no trial after this long, e.g. 90m, 2h; same as --set tuning.max_time=...",
    )
    tune.add_argument(
        "--role",
        choices=["single", "chief", "worker"],
        default="single",
        help="distributed search: run the same command with --role chief on one host, --role worker on others",
    )
    tune.add_argument(
        "--host",
        help="chief's address (default: $KERASTUNER_ORACLE_IP or 127.0.0.1); "
        "the gRPC channel is unauthenticated: expose it only on a trusted network",
    )
    tune.add_argument(
        "--port", type=int, help="chief's port (default: $KERASTUNER_ORACLE_PORT or 8000)"
    )
    tune.add_argument(
        "--workers",
        type=int,
        default=0,
        metavar="N",
        help="start a chief here and N workers on this machine (one per GPU where there are GPUs)",
    )
    return parser


def _tune(args: argparse.Namespace) -> None:
    if args.workers and args.role != "single":
        raise UserError("--workers starts its own chief and workers; leave out --role")
    overrides = config_overrides(args) + (
        [f"tuning.max_time={args.max_time}"] if args.max_time else []
    )
    cfg = load_recipe(args.recipe).load_config(args.config, overrides)
    check_config(cfg)  # a bad key or value is said at once, not after TensorFlow's start-up
    from tuning import tune
    from tuning.results import format_table

    result = tune(
        args.recipe,
        cfg,
        args.dir,
        resume=args.resume,
        overwrite=args.overwrite,
        role=args.role,
        host=args.host,
        port=args.port,
        workers=args.workers,
    )
    if result is None:  # a worker: the chief reports
        print("worker: no more trials")
        return
    print(f"\n{format_table(result)}\n")
    print(f"results:     {result.search.results_csv} (and .json)")
    if result.best is not None:
        print(
            f"best config: {result.search.best_config}  (keras-zoo train {args.recipe} --config {result.search.best_config})"
        )
    print(f"TensorBoard: keras-zoo tensorboard {result.search.path}")


def _command(args: argparse.Namespace) -> None:
    if args.command == "list":
        print(format_catalog(args.task))
    elif args.command == "tensorboard":
        from keras_zoo_cli.board import serve

        serve(args.runs_dir, host=args.host, port=args.port)
    elif args.command == "tune":
        _tune(args)
    elif args.command == "runs":
        from keras_zoo_cli.runs import runs_command

        print(runs_command(args.patterns, args.runs_dir, args.sort, args.json, args.delete))
    elif args.command == "show":
        from keras_zoo_cli.show import show

        print(show(args.run, args.runs_dir))
    else:
        run_recipe_command(load_recipe(args.recipe), args)


def main(argv: Sequence[str] | None = None) -> int:
    """The `keras-zoo` program with `argv` (default: this process's arguments). Called with no
    `argv` it is the program itself and applies its process settings first (CPU settings, the
    native log filter: zoo/runtime.py `prepare_command_process`); with `argv` (tests, notebooks)
    it runs the command in the caller's process as it is."""
    args = parse_command_line(build_parser(), argv)
    # `--workers N` reruns it in each worker
    args.argv = list(sys.argv[1:] if argv is None else argv)
    args.origin = ["keras-zoo", *args.argv]  # the model card's command
    if args.verbose:
        # read by zoo.runtime, here and in the processes this one starts
        os.environ["KERAS_ZOO_VERBOSE"] = "1"
    if argv is None:
        prepare_command_process()
    return guarded(lambda: _command(args))


if __name__ == "__main__":
    raise SystemExit(main())
