"""The run lifecycle, written once for every recipe (lifecycle.py: train, evaluate, predict,
export, presets) and what it owns: the recipe contract (contract.py), configs (config.py), the
recipe registry, run directories and their files, training (training.py), devices and
distribution, TensorBoard summaries, model cards, and the recipe script's command line (cli.py).
It never imports a task.

`recipes.engine.train` (and the other names of lifecycle.py) loads lifecycle.py, and TensorFlow,
on first use, so the light modules here (config, registry, run_dir, cli) load without it.
"""

from recipes import attributes_of

__getattr__ = attributes_of(__name__, "recipes.engine.lifecycle")
