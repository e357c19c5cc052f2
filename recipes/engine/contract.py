"""The recipe contract: what a task must say about itself, and nothing more.

A recipe is an object of a `Recipe` subclass. It knows its task (config, data, model, metrics,
predictions, export); the engine (recipes/engine/lifecycle.py) owns everything every task needs: config
checks, the run directory and its status, resume, seeds and precision, training, TensorBoard,
metrics.json, the command line. The engine calls a recipe in this order:

    train     read_data -> build -> (fit, by the engine) -> load -> evaluate per split
              (again with the last epoch's weights when another epoch was kept) -> export
    evaluate  read_data or read_split -> load -> evaluate
    predict   load -> predict (-> format_prediction, prediction_table for the CLI)
    export    load -> export

`read_data` and `build` must check everything that can be checked and write nothing: the run
directory is created only after both have returned. A recipe module holds one instance, `RECIPE`,
and its line in recipes/engine/registry.py; `python -m recipes.<name>` is the engine's script CLI.

    >>> from recipes import engine, sentiment
    >>> cfg = sentiment.RECIPE.load_config(overrides=["train.epochs=1"])  # doctest: +SKIP
    >>> run, report = engine.train(sentiment.RECIPE, cfg)  # doctest: +SKIP
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from recipes.common.metrics import format_report
from recipes.engine.config import load_config


@dataclass
class Phase:
    """A stretch of training with its own trainable weights and learning-rate schedule.

    Most recipes train in one phase; transfer learning on images trains the head on a frozen
    backbone first, then fine-tunes. `prepare` sets `layer.trainable` flags and compiles the model
    for the phase (it is called again when a resumed run skips a finished phase, so the model's
    trainable state is right for the phases that follow).
    """

    name: str
    epochs: int
    prepare: Callable[[Any], None]
    # The model this phase fits when it is not `Training.model`: a part of it that shares its
    # layers (few-shot's first phase fits the backbone and pooling alone, on a contrastive loss).
    # Only with `Training.select_epoch` False: a part's weights cannot stand for the whole model's.
    model: Any = None
    # `() -> (train, validation)`, the phase's own datasets, made when the phase starts, after the
    # phases before it have trained (a head's features from the backbone they tuned); None:
    # `Training.train` and `Training.validation`.
    data: Callable[[], tuple[Any, Any]] | None = None
    examples: int = 0  # examples an epoch of this phase trains on; 0: `Training.examples_per_epoch`


@dataclass
class Training:
    """What `Recipe.build` hands the engine: a model ready for its first phase and its data."""

    model: Any  # keras.Model
    phases: list[Phase]
    train: Any  # tf.data.Dataset of (inputs, targets) batches
    validation: Any  # tf.data.Dataset, or None when the recipe scores validation in `callbacks`
    examples_per_epoch: int
    task: dict  # task.json: what `Recipe.load` needs beside the model (labels, lengths, ...)
    save_assets: Callable[[Path], None] = lambda run_path: None  # e.g. the tokenizer, into the run
    # epoch metrics the loss does not give (entity F1)
    callbacks: list = field(default_factory=list)
    class_weight: dict | None = None
    # one-line facts for the user (skipped files, ...)
    notes: list[str] = field(default_factory=list)
    # The splits to evaluate after training when `build` prepared them further than `read_data`
    # (decoded images); None: `read_data`'s.
    data: Any = None
    # When `model` is only the head, trained on a frozen backbone's features computed once
    # (`training.head_on_features`): the whole model (backbone and that same head), which the
    # engine evaluates, exports and hands to `Recipe.load`. None: `model` is the whole model.
    whole_model: Any = None
    # False: train every phase's epochs and keep the last (a fixed budget), choosing nothing on
    # validation data: for runs with too few examples to hold any out (few-shot), or none given.
    select_epoch: bool = True

    @property
    def whole(self) -> Any:
        """The model to evaluate and export once training is done."""
        return self.model if self.whole_model is None else self.whole_model


@dataclass
class Projector:
    """Vectors for TensorBoard's embedding projector, with a metadata column per name."""

    name: str
    vectors: Any  # np.ndarray [n, dim]
    metadata: dict[str, Sequence[str]]


@dataclass
class Evaluation:
    """One split's evaluation: the report (metrics.json) and what TensorBoard shows of it."""

    report: dict  # JSON-ready; its numbers become `eval/<key>` scalars
    text: dict[str, str] = field(default_factory=dict)  # Markdown tables by tag
    images: dict[str, bytes] = field(default_factory=dict)  # PNG by tag
    scores: tuple | None = None  # (true class ids, class probabilities): a PR curve per class
    projector: Projector | None = None


class Recipe(abc.ABC):
    """One task. Subclasses set `name` and `config_class` and implement the abstract methods."""

    name: ClassVar[str]
    # dataclass with sections data, model, train (a TrainConfig), run, tuning
    config_class: ClassVar[type]
    pretokenized_input: ClassVar[bool] = (
        False  # predict accepts whitespace-tokenised inputs (--tokens)
    )
    hub_task: ClassVar[str] = "other"  # the Hugging Face pipeline tag of the task, for model cards

    def load_config(self, path: str | Path | None = None, overrides: Sequence[str] = ()) -> Any:
        """This recipe's config from its defaults, a YAML file and `key=value` overrides, checked."""
        return load_config(self.config_class, path, overrides)

    # -- data
    @abc.abstractmethod
    def read_data(self, cfg: Any) -> Any:
        """Every split the config names, read and checked (labels across splits, decodable
        images, ...): an object with `train`, `validation` and `test` (None when absent), and
        optionally `selection` (held out of train to choose the epoch on; `build` then scores
        epochs on it, and the engine reports that the epoch was chosen there)."""

    @abc.abstractmethod
    def read_split(self, cfg: Any, source: str, split: str) -> Any:
        """One labelled split from `source` (for `evaluate --data`), read as `read_data` reads it."""

    # -- model
    @abc.abstractmethod
    def build(self, cfg: Any, data: Any) -> Training:
        """Load the backbone, build the model, its training phases and datasets; write nothing."""

    @abc.abstractmethod
    def load(self, run_path: Path, cfg: Any, task: dict, model: Any) -> Any:
        """A predictor: an object with the trained Keras model as `model` and what else it needs to
        evaluate, predict and export (tokenizer, labels), from task.json and the run's assets."""

    # -- results
    @abc.abstractmethod
    def evaluate(self, predictor: Any, examples: Any, split: str, cfg: Any) -> Evaluation:
        """Score one split (an element of `read_data`'s result) with the predictor."""

    @abc.abstractmethod
    def predict(
        self, predictor: Any, inputs: Sequence[str], pretokenized: bool = False
    ) -> list[dict]:
        """One JSON-ready row per input (a text or an image path), in order."""

    @abc.abstractmethod
    def export(self, predictor: Any, directory: Path) -> Path:
        """Write deployable models (SavedModel with preprocessing inside, ...) into `directory`."""

    # -- how the command line shows results (classifier defaults)
    def format_report(self, report: dict) -> str:
        return format_report(report)

    def format_prediction(self, row: dict) -> str:
        subject = row.get("text", row.get("path"))
        if row.get("label") is None:
            return f"-\t-\t{subject}\t({row.get('error', 'no prediction')})"
        return f"{row['label']}\t{row['probabilities'][row['label']]:.4f}\t{subject}"

    def prediction_table(self, rows: list[dict]) -> tuple[list[str], list[list]]:
        """`(header, rows)` of the CSV that `predict --csv` writes."""
        table = [
            [
                row.get("text", row.get("path")),
                row.get("label") or "",
                row["probabilities"][row["label"]] if row.get("label") is not None else "",
                row.get("error", ""),
            ]
            for row in rows
        ]
        return ["input", "label", "probability", "error"], table
