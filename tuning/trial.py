"""One trial run in its own process: `python -m tuning.trial <recipe> <config.yaml> [--resume]`.

The search starts this for each trial (tuning.trial_process: subprocess), so whatever training
leaves in memory goes when the process ends. Exit status 2 is a one-line user error.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Sequence

from zoo.errors import UserError


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tuning.trial", description=__doc__.splitlines()[0])
    parser.add_argument("recipe")
    parser.add_argument("config")
    parser.add_argument("--resume", action="store_true")
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from recipes.cli import load_recipe  # noqa: PLC0415

    try:
        recipe = load_recipe(args.recipe)
        cfg = recipe.load_config(args.config)
        recipe.train(cfg, overwrite=not args.resume, resume=args.resume, verbose=2, export=False)
    except UserError as e:
        print(f"keras-zoo: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
