"""The run lifecycle, written once for every recipe (lifecycle.py: train, evaluate, predict,
export, presets) and what it owns: the recipe contract (contract.py), configs (config.py), the
recipe registry, run directories and their files, training (training.py), devices and
distribution, TensorBoard summaries, model cards, and the recipe script's command line (cli.py).
It never imports a task.

`recipes.engine.train` (and the other names of lifecycle.py) loads lifecycle.py, and TensorFlow,
on first use, so the light modules here (config, registry, run_dir, cli) load without it.
"""

from importlib import import_module
from importlib.util import find_spec


def __getattr__(name: str):
    if (
        find_spec(f"{__name__}.{name}") is not None
    ):  # a module of this package (`from . import tags`)
        return import_module(f"{__name__}.{name}")
    return getattr(import_module("recipes.engine.lifecycle"), name)
