"""keras-zoo recipes: the engine (engine/: the run lifecycle every task shares), what tasks share
(common/), and one package per task (sentiment/, image_classification/, ner/), each holding its
recipe and the code only it uses. `python -m recipes.<task>` is a task's own command line."""

from importlib import import_module
from importlib.util import find_spec


def attributes_of(package: str, module: str):
    """A package's `__getattr__` (PEP 562): its own modules (`from recipes.ner import tags`), and
    any other name from `module`, imported on first use. A task package forwards to its recipe,
    `recipes.engine` to its lifecycle, so that importing the package stays light (no TensorFlow)."""

    def attribute(name: str):
        if find_spec(f"{package}.{name}") is not None:
            return import_module(f"{package}.{name}")
        return getattr(import_module(module), name)

    return attribute
