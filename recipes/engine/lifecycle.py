"""The run lifecycle, written once for every recipe: train, evaluate, predict, export.

    >>> from recipes import engine
    >>> from recipes.engine.registry import load_recipe
    >>> recipe = load_recipe("sentiment")
    >>> cfg = recipe.load_config(overrides=["train.epochs=1"])  # doctest: +SKIP
    >>> run, report = engine.train(recipe, cfg)  # doctest: +SKIP
    >>> engine.predict(recipe, run.path, ["a lovely film"])  # doctest: +SKIP

A training run, as `train` runs it: check the config and the run's place (recipes/engine/run_dir.py),
read and check the data, build the model, and only then open the run directory; fit phase after
phase (recipes/engine/training.py), evaluate every split, log the HParams session, export, mark the run
finished (and swap it in when it replaces another). Nothing a recipe writes itself.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import keras
import keras_hub  # noqa: F401  (registers the backbone classes for deserialisation)
import numpy as np
import tensorflow as tf
from tensorboard.plugins.hparams import api as hparams_api

from recipes.engine import devices, distribute, model_card, summaries, training
from recipes.engine.config import check_config, flat_values, save_config, value_at, with_values
from recipes.engine.contract import Evaluation, Recipe
from recipes.engine.registry import load_recipe
from recipes.engine.run_dir import (
    RunDir,
    RunPlan,
    open_finished_run,
    open_run_for_writing,
    plan_training_run,
)
from recipes.engine.run_files import read_if_present
from recipes.engine.run_metrics import final_metrics, scalar_metrics
from zoo.errors import UserError
from zoo.heads import inference_copy, synchronize_batch_norm
from zoo.presets import TASK_CONFIG, load_task_model, read_task_record, save_task_preset
from zoo.runtime import SPEEDUPS_VARIABLE, speedups_from_environment

# Keys that may change when a run is resumed: where and how it is logged, not what it trains.
# (run.runs_dir / run.name / run.dir say which run to resume; training ignores tuning.*.)
SAFE_ON_RESUME = ("run.",)


def train(
    recipe: Recipe | str,
    cfg: Any,
    *,
    overwrite: bool = False,
    resume: bool = False,
    changed_keys: Sequence[str] = (),
    verbose: int | str = "auto",
    export: bool = True,
    origin: Sequence[str] | str = "",
) -> tuple[RunDir, dict]:
    """Train `cfg` into `runs/<recipe>/<run.name>/` (or `run.dir`); returns the run and its report
    (`validation`, `test` when there is test data, `chosen_epoch`, `last_epoch`,
    `train_examples_per_second`), which is empty in
    the workers of a cluster other than the chief (see recipes/engine/distribute.py).

    `overwrite` replaces an existing run once the new one has finished; `resume` continues an
    interrupted (or failed) run with its own config, changing only `changed_keys` (the keys the
    user set on the command line), which may only be logging keys (`run.*`). `origin`, for the
    model card, is the command line that started the run, or a sentence on where it came from.
    """
    recipe = load_recipe(recipe) if isinstance(recipe, str) else recipe
    check_config(cfg)
    cfg, changed_keys = _speedups_from_environment(cfg, changed_keys)
    plan = plan_training_run(cfg.run, recipe.name, overwrite=overwrite, resume=resume)
    if plan.resume:
        cfg = _resumed_config(recipe, plan, cfg, changed_keys)
    local = devices.local_devices()
    with (
        devices.global_precision_kept(),
        distribute.distribution(cfg.train.distribute, plan, len(local.gpus)) as dist,
    ):
        training.seed_everything(cfg.train.seed)
        train_cfg = _resolved_training(cfg, local, dist.replicas)
        runtime = runtime_record(train_cfg.train, dist, local)
        data = recipe.read_data(cfg)
        with dist.strategy.scope():
            built = recipe.build(train_cfg, data)
        if sum(max(phase.epochs, 0) for phase in built.phases) == 0:
            raise UserError("train.epochs: every training phase has 0 epochs; nothing would train")
        if plan.replaces and dist.is_chief:
            print(f"{plan.final}: the {plan.replaces} run there is replaced when this one finishes")
        opened = (
            open_run_for_writing(
                plan,
                recipe.name,
                tensorboard=cfg.run.tensorboard,
                origin=origin or "Python: recipes.engine.lifecycle.train",
            )
            if dist.is_chief
            else distribute.scratch_run(dist.scratch, cfg.run.tensorboard)
        )
        with opened as writer:
            run = writer.run
            if dist.is_chief:
                _record_runtime(writer, runtime)
            save_config(cfg, run.config)
            run.write_json(run.task, built.task)
            splits = built.data if built.data is not None else data
            if dist.is_chief and not (plan.resume and run.data.exists()):
                run.write_json(run.data, model_card.data_summary(splits))
            built.save_assets(run.path)
            if run.tensorboard:
                summaries.write_text_summary(run.logs, "config", summaries.config_text(cfg))
            if dist.is_chief:
                for note in [*built.notes, dist.describe()]:
                    if note:
                        print(note)
            synchronize_batch_norm(built.model, dist.replicas > 1)
            started = time.perf_counter()
            with dist.strategy.scope():
                history = training.fit(
                    built.model,
                    distribute.shard_by_data(built.train),
                    distribute.shard_by_data(built.validation),
                    train_cfg.train,
                    run,
                    built.examples_per_epoch,
                    phases=built.phases,
                    extra_callbacks=built.callbacks,
                    class_weight=built.class_weight,
                    verbose=verbose if dist.is_chief else 0,
                    logging=cfg.run,
                    select_epoch=built.select_epoch,
                )
            train_seconds = time.perf_counter() - started
            synchronize_batch_norm(built.model, False)
            # every worker: the copy reads the replicated weights
            model = inference_copy(built.whole)
            if not dist.is_chief:
                return RunDir(plan.final, tensorboard=cfg.run.tensorboard), {}
            predictor = recipe.load(run.path, cfg, built.task, model)
            step = len(history["epoch"])
            report = {
                split: _evaluate(recipe, predictor, examples, run, split, cfg, step)
                for split in REPORTED_SPLITS
                if (examples := getattr(splits, split, None)) is not None
            }
            metrics = final_metrics(run, cfg.train.monitor, keep_last=not built.select_epoch)
            report.update(
                _chosen_and_last_epoch(
                    recipe, built, run, cfg, splits, metrics, report, export, train_seconds
                )
            )
            report["train_examples_per_second"] = [
                v for v in history.get("examples_per_second", []) if v == v
            ]
            if cfg.run.hparams and run.tensorboard:
                log_hparams_session(
                    run.logs,
                    flat_values(cfg),
                    metrics,
                    session_id=session_name(plan.final, cfg.run.runs_dir),
                )
            if export:
                predictor.model.save(str(run.keras_model))
                if cfg.run.export:
                    recipe.export(predictor, run.export)
            _write_cards(recipe, run, plan.final.name, export and cfg.run.export)
    return RunDir(plan.final, tensorboard=cfg.run.tensorboard), report


REPORTED_SPLITS = ("validation", "test")


def _write_cards(recipe: Recipe, run: RunDir, name: str, export: bool) -> None:
    """The model card, into the run and its export; a card that cannot be written is a warning,
    never a failed run (the model is trained and exported by then)."""
    try:
        model_card.write_model_card(recipe, run.path, name=name)
        if export:
            model_card.write_model_card(recipe, run.path, run.export, name=name)
    except Exception as e:  # noqa: BLE001  (any failure: the trained model is kept, the card is a warning)
        print(
            f"warning: the model card was not written ({type(e).__name__}: {e}); "
            f"`keras-zoo export {recipe.name} {run.path}` writes it again",
            file=sys.stderr,
        )


def session_name(path: Path, runs_dir: str | Path) -> str:
    """A run's name for TensorBoard's HParams dashboard: its path relative to the runs directory
    (`sentiment/demo`; a search's trial: `sentiment/lr-search/trials/trial_3`), the prefix of the
    names TensorBoard serving that directory gives its event folders (`sentiment/demo/logs`,
    `.../logs/train`). A run outside the runs directory is named by its own folder name."""
    path, root = Path(path).resolve(), Path(runs_dir).resolve()
    return str(path.relative_to(root)) if path.is_relative_to(root) else path.name


def _chosen_and_last_epoch(
    recipe: Recipe,
    built: Any,
    run: RunDir,
    cfg: Any,
    splits: Any,
    metrics: dict,
    report: dict,
    evaluate_last: bool = True,
    train_seconds: float = 0.0,
) -> dict:
    """Which epoch the run kept and on which split it was chosen (`selection`, held out of train by
        `data.selection_split`, else `validation`; `none` for a fixed budget, `Training.select_epoch`),
        and the reported splits' figures with the last epoch's weights beside the kept epoch's: a
        report chosen on its own split is optimistic, and the two figures show by how much. Both go
        into metrics.json, with `train_seconds`: the training phases' time (`training.fit`, after the
    data is read and the model built; a resumed run counts its own process's).
        `evaluate_last=False` (search trials) skips the second evaluation that a last epoch other than
        the kept one needs."""
    chosen_on = "validation" if getattr(splits, "selection", None) is None else "selection"
    if not built.select_epoch:
        chosen_on = "none"
    best, epochs = int(metrics.get("best_epoch", 0)), int(metrics.get("epochs", 0))
    saved = read_if_present(run.metrics)  # none: a run without validation or test data
    last: dict = {"epoch": epochs}
    if best == epochs:
        last.update({split: report[split] for split in REPORTED_SPLITS if split in report})
    elif saved.get("last_epoch", {}).get("epoch") == epochs:  # a resume after they were written
        last = saved["last_epoch"]
    elif run.last_weights.exists() and evaluate_last:
        training.load_best_weights(built.model, run, run.last_weights)
        try:
            predictor = recipe.load(run.path, cfg, built.task, inference_copy(built.whole))
            for split in REPORTED_SPLITS:
                if (examples := getattr(splits, split, None)) is not None:
                    last[split] = recipe.evaluate(predictor, examples, split, cfg).report
        finally:  # back to the kept epoch: built.model may be (part of) the very model that is exported
            training.load_best_weights(built.model, run)
    run.last_weights.unlink(missing_ok=True)
    scalars = {
        split: scalar_metrics(figures) if isinstance(figures, dict) else figures
        for split, figures in last.items()
    }
    added = {
        "chosen_epoch": {
            "epoch": best,
            "of": epochs,
            "chosen_on": chosen_on,
            "monitor": cfg.train.monitor,
        },
        "last_epoch": scalars,
        "train_seconds": round(train_seconds, 3),
    }
    run.write_json(run.metrics, {**saved, **added})
    return added


def _resolved_training(cfg: Any, local: devices.Devices, replicas: int) -> Any:
    """The config the recipe builds with: `train.precision` and `train.jit_compile` resolved for
    this machine's devices (and the precision policy set), the learning rate scaled if asked. The
    run's config.yaml keeps the user's values (`auto`), so a resume resolves them again."""
    precision = devices.set_precision(
        devices.resolve_precision(cfg.train.precision, local, cfg.train.CPU_BF16)
    )
    learning_rate = distribute.scaled_learning_rate(
        cfg.train.learning_rate, cfg.train.scale_learning_rate, replicas
    )
    train = dataclasses.replace(
        cfg.train,
        precision=precision,
        learning_rate=learning_rate,
        jit_compile=devices.resolve_jit_compile(cfg.train.jit_compile, local),
    )
    return dataclasses.replace(cfg, train=train)


def runtime_record(train_cfg: Any, dist: distribute.Distribution, local: devices.Devices) -> dict:
    """What `auto` resolved to for this process, as run.json keeps it (`runtime`)."""
    return {
        "precision": train_cfg.precision,
        "jit_compile": bool(train_cfg.jit_compile),
        "strategy": type(dist.strategy).__name__ if dist.kind != "none" else "none",
        "replicas": dist.replicas,
        "speedups": bool(train_cfg.speedups),
        "devices": local.describe(),
    }


def _record_runtime(writer: Any, runtime: dict) -> None:
    """Keep `runtime` in run.json; a resume on another machine says what changed and keeps the
    earlier record beside the new one."""
    record = writer.run.read_json(writer.run.status)
    previous, fields = record.get("runtime"), {"runtime": runtime}
    if previous and previous != runtime:
        changed = ", ".join(
            f"{key} {previous.get(key)!r} -> {value!r}"
            for key, value in runtime.items()
            if previous.get(key) != value
        )
        print(f"resuming with another runtime: {changed}")
        fields["earlier_runtimes"] = [*record.get("earlier_runtimes", []), previous]
    writer.set_status("running", **fields)


def _speedups_from_environment(cfg: Any, changed_keys: Sequence[str]) -> tuple[Any, list[str]]:
    """KERAS_ZOO_SPEEDUPS, where set, as if `--set train.speedups=...` had been given: written into
    the run's config, and refused on `--resume` when it differs from the run's."""

    wanted = speedups_from_environment()
    if wanted is None:
        return cfg, list(changed_keys)
    if wanted != cfg.train.speedups:
        cfg = with_values(cfg, {"train.speedups": wanted}, SPEEDUPS_VARIABLE)
    return cfg, [*changed_keys, "train.speedups"]


def _resumed_config(recipe: Recipe, plan: RunPlan, cfg: Any, changed_keys: Sequence[str]) -> Any:
    """The run's own config, with the logging keys the user changed; other changes are refused."""
    saved = recipe.load_config(plan.work / "config.yaml")
    changes = {
        key: value_at(cfg, key)
        for key in changed_keys
        if key not in ("run.runs_dir", "run.name", "run.dir")
        and not key.startswith("tuning.")
        and value_at(cfg, key) != value_at(saved, key)
    }
    refused = [key for key in changes if not key.startswith(SAFE_ON_RESUME)]
    if refused:
        was = ", ".join(f"{key}={value_at(saved, key)!r}" for key in refused)
        raise UserError(
            f"--resume: {', '.join(refused)} would change how the run trains (it has {was}); "
            "resume without them, or start a new run (another --name, or --overwrite)"
        )
    for key, value in changes.items():
        print(f"resuming with {key}={value!r} (was {value_at(saved, key)!r})")
    return with_values(saved, changes, "--resume") if changes else saved


# ------------------------------------------------------------------------------------ finished runs
def open_finished(recipe: Recipe, path: str | Path) -> tuple[RunDir, Any, Any]:
    """`(run, cfg, predictor)` of a finished run, for evaluate / predict / export."""

    run = open_finished_run(path)
    made_by = run.read_json(run.status).get("recipe")
    if made_by and made_by != recipe.name:
        raise UserError(f"{run.path}: a run of the {made_by} recipe, not {recipe.name}")
    cfg = recipe.load_config(run.config)
    run = dataclasses.replace(run, tensorboard=cfg.run.tensorboard)
    task = run.read_json(run.task)
    if not run.keras_model.exists():
        raise UserError(
            f"{run.keras_model}: not found; the run did not finish (continue it with --resume)"
        )
    try:
        model = keras.saving.load_model(str(run.keras_model), compile=False)
    except ValueError as e:  # e.g. Keras's safe mode refusing a lambda layer
        raise UserError(
            f"{run.keras_model}: Keras cannot load it ({str(e).strip().splitlines()[0][:200]})"
        ) from None
    if not all(np.isfinite(weight).all() for weight in model.get_weights()):
        raise UserError(
            f"{run.keras_model}: some weights are not finite (NaN or Inf), so every output would be; "
            "the model diverged: train it again with a lower train.learning_rate"
        )
    return run, cfg, recipe.load(run.path, cfg, task, model)


def evaluate(
    recipe: Recipe | str, run_path: str | Path, source: str = "", split: str = "validation"
) -> dict:
    """Evaluate a finished run on `source` (default: the run's own `split`, read as in training);
    the report goes to metrics.json and TensorBoard as `evaluate_<split>`."""
    recipe = load_recipe(recipe) if isinstance(recipe, str) else recipe
    check_writable(
        Path(run_path), "evaluate writes its report (metrics.json, TensorBoard) into the run"
    )
    run, cfg, predictor = open_finished(recipe, run_path)
    if source:
        examples = recipe.read_split(cfg, source, split)
    else:
        examples = getattr(recipe.read_data(cfg), split, None)
        if examples is None:
            raise UserError(f"{run.config}: the run has no {split} data; pass --data")
    return _evaluate(recipe, predictor, examples, run, f"evaluate_{split}", cfg, step=0)


def predict(
    recipe: Recipe | str, run_path: str | Path, inputs: Sequence[str], pretokenized: bool = False
) -> list[dict]:
    """One row per input (texts, or image files and folders), from a finished run."""
    recipe = load_recipe(recipe) if isinstance(recipe, str) else recipe
    inputs = _checked_inputs(recipe, inputs, pretokenized)
    _, _, predictor = open_finished(recipe, run_path)
    return recipe.predict(predictor, inputs, pretokenized=pretokenized)


def _checked_inputs(recipe: Recipe, inputs: Sequence[str], pretokenized: bool) -> list[str]:
    inputs = list(inputs)
    if not inputs:
        raise UserError("predict: no inputs; give texts or files as arguments, or --file FILE")
    empty = [i + 1 for i, text in enumerate(inputs) if not str(text).strip()]
    if empty:
        raise UserError(f"predict: input {empty[0]} is empty; give a text or a path")
    if pretokenized and not recipe.pretokenized_input:
        raise UserError(f"--tokens: only for token classification (ner), not {recipe.name}")
    return inputs


def export(recipe: Recipe | str, run_path: str | Path) -> Path:
    """Write a finished run's deployable models again (into its export/ folder)."""
    recipe = load_recipe(recipe) if isinstance(recipe, str) else recipe
    check_writable(Path(run_path) / "export", "export writes into the run's export/ folder")
    run, _, predictor = open_finished(recipe, run_path)
    path = recipe.export(predictor, run.export)
    model_card.write_model_card(recipe, run.path, run.export)
    return path


PRESET_CONFIG = "keras_zoo_config.yaml"  # the run's resolved config, in a preset directory


def export_preset(recipe: Recipe | str, run_path: str | Path, directory: str | Path) -> Path:
    """Write a finished run into `directory` as a KerasHub preset (zoo/presets.py) with its
    config and model card. The fine-tuned backbone loads with plain KerasHub
    (`keras_hub.models.Backbone.from_preset(directory)`); the whole task with `load_preset`.
    An existing non-empty directory is refused; the preset appears whole or not at all."""

    recipe = load_recipe(recipe) if isinstance(recipe, str) else recipe
    if not str(directory).strip():
        raise UserError("--preset: empty; name the directory to write the preset into")
    target = Path(directory)
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        what = "is not empty" if target.is_dir() else "is a file"
        raise UserError(f"{target}: exists and {what}; choose another --preset directory")
    check_writable(
        target.parent, "the preset is built beside its directory, then renamed into place"
    )
    run, cfg, predictor = open_finished(recipe, run_path)
    building = target.with_name(f".{target.name}.partial")
    shutil.rmtree(building, ignore_errors=True)
    record = {
        "recipe": recipe.name,
        "recipe_module": type(recipe).__module__,
        "task": run.read_json(run.task),
    }
    save_task_preset(
        predictor.model, building, record, [run.path / "tokenizer", run.path / "image_converter"]
    )
    save_config(cfg, building / PRESET_CONFIG)
    model_card.write_model_card(recipe, run.path, building)
    if target.exists():
        target.rmdir()
    building.rename(target)
    return target


@dataclasses.dataclass
class PresetModel:
    """A task loaded from a preset directory: `predict` as `keras-zoo predict` does.

    >>> model = load_preset("my_preset")  # doctest: +SKIP
    >>> model.predict(["a fine film"])[0]["label"]  # doctest: +SKIP
    'positive'
    """

    recipe: Recipe
    predictor: Any  # the recipe's predictor: .model (Keras), labels, preprocessing

    def predict(self, inputs: Sequence[str], pretokenized: bool = False) -> list[dict]:
        inputs = _checked_inputs(self.recipe, inputs, pretokenized)
        return self.recipe.predict(self.predictor, inputs, pretokenized=pretokenized)


def load_preset(directory: str | Path) -> PresetModel:
    """The whole task (model, labels, preprocessing) of a preset that `export_preset` wrote."""

    directory = Path(directory)
    if not (directory / TASK_CONFIG).is_file():
        raise UserError(f"{directory}: not a keras-zoo preset (no {TASK_CONFIG})")
    record = read_task_record(directory)
    try:  # a recipe of your own is found by its module path
        recipe = load_recipe(record["recipe"])
    except UserError:
        recipe = load_recipe(record.get("recipe_module", record["recipe"]))
    cfg = recipe.load_config(directory / PRESET_CONFIG)
    return PresetModel(
        recipe, recipe.load(directory, cfg, record["task"], load_task_model(directory))
    )


def check_writable(path: Path, why: str) -> None:
    """Fail in one line, before any work, when `path` (an existing directory) cannot be written."""
    if path.is_dir() and not os.access(path, os.W_OK | os.X_OK):
        raise UserError(
            f"{path}: cannot write there (permission denied, or a read-only file system); {why}"
        )


# ------------------------------------------------------------------------------------------ reports
def _evaluate(
    recipe: Recipe, predictor: Any, examples: Any, run: RunDir, split: str, cfg: Any, step: int
) -> dict:
    evaluation = recipe.evaluate(predictor, examples, split, cfg)
    write_report(run, split, evaluation, step)
    return evaluation.report


def write_report(run: RunDir, split: str, evaluation: Evaluation, step: int) -> None:
    """Add an evaluation to metrics.json and to TensorBoard in `logs/eval_<split>/`: its numbers
    as `eval/<key>` scalars, its text (Markdown) and images (PNG), a PR curve per class from its
    scores (true class ids, class probabilities; classes named by `report["labels"]`) and its
    embedding projector."""
    report = evaluation.report
    metrics = read_if_present(run.metrics)
    metrics[split] = report
    run.write_json(run.metrics, metrics)
    if split in REPORTED_SPLITS:  # the model card shows them beside its figures
        for name, png in evaluation.images.items():
            if "confusion" in name:  # not the grids of misclassified images: a card is shared
                (run.path / f"{split}_{name.split('/')[-1]}.png").write_bytes(png)
    if not run.tensorboard:
        return
    writer = tf.summary.create_file_writer(str(eval_logdir(run, split)))
    with writer.as_default():
        for key, value in report.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                tf.summary.scalar(f"eval/{key}", value, step=step)
        for name, body in evaluation.text.items():
            tf.summary.text(name, body, step=step)
        for name, png in evaluation.images.items():
            tf.summary.image(name, tf.io.decode_png(png, channels=4)[tf.newaxis], step=step)
        if evaluation.scores is not None:
            summaries.write_pr_curves(
                f"{split}/pr_curve", *evaluation.scores, report["labels"], step
            )
    writer.close()
    projector = evaluation.projector
    if projector is not None and len(projector.vectors):
        summaries.write_projector(
            eval_logdir(run, split), projector.name, projector.vectors, projector.metadata
        )


def eval_logdir(run: RunDir, split: str) -> Path:
    """Where an evaluation's summaries (and its embedding projector) go."""
    return run.logs / f"eval_{split}"


def log_hparams_session(
    logdir: Path, hparams: dict, metrics: dict[str, float], session_id: str
) -> None:
    """One session of TensorBoard's HParams dashboard: the hyperparameters and the final metrics as
    scalars, in `logdir` itself (a search's experiment config names these metrics)."""

    writer = tf.summary.create_file_writer(str(logdir))
    with writer.as_default():
        hparams_api.hparams(hparams, trial_id=session_id)
        for name, value in metrics.items():
            tf.summary.scalar(name, value, step=0)
    writer.close()
