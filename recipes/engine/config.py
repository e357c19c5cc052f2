"""Recipe configs: dataclasses, loaded from YAML, overridden from the command line, validated.

Every recipe's config is a dataclass of sections (`data`, `model`, `train`, `run`). The sections
shared by all recipes live here; a recipe adds its own `data` section.

    >>> cfg = load_config(SentimentConfig, overrides=["train.learning_rate=3e-5"])  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import datetime
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal, TypeVar

import yaml

from zoo.errors import UserError, closest

C = TypeVar("C")


@dataclass
class ModelConfig:
    LIMITS: ClassVar[dict[str, str]] = {"lora_rank": ">= 1", "dropout": "[0, 1)"}

    backbone: str = (
        "minilm-l6"  # catalog name, KerasHub preset, hf:// / kaggle:// handle, or local directory
    )
    finetune: Literal["full", "frozen", "lora"] = "full"  # frozen: train the head only
    lora_rank: int = 8
    dropout: float = 0.1


@dataclass
class TrainConfig:
    LIMITS: ClassVar[dict[str, str]] = {
        "epochs": ">= 1",
        "batch_size": ">= 1",
        "learning_rate": "> 0",
        "weight_decay": ">= 0",
        "warmup_ratio": "[0, 1)",
        "clipnorm": ">= 0",
        "early_stopping_patience": ">= 0",
        "seed": ">= 0",
    }
    # Whether `precision: auto` picks mixed bfloat16 on CPUs with native bf16 (see recipes/engine/devices.py)
    CPU_BF16: ClassVar[bool] = True

    epochs: int = 2
    batch_size: int = 32
    learning_rate: float = 1e-4  # peak, after warm-up
    weight_decay: float = 0.01
    warmup_ratio: float = (
        0.06  # share of all steps spent warming up linearly, then linear decay to 0
    )
    # 0: no clipping. Keras's clipping densifies the word-embedding gradient (30k x 384 for MiniLM)
    # every step: +24% step time for `clipnorm`, +11% for a global norm, measured at SST-2 lengths;
    # the warm-up keeps the first steps stable instead.
    clipnorm: float = 0.0
    # keras-zoo's speed-ups: the fused AdamW (zoo/keras_compat.py), and a frozen backbone's features
    # computed once (training.head_on_features). False: keras.optimizers.AdamW and the backbone run
    # every epoch, for ruling them out. KERAS_ZOO_SPEEDUPS=0 (or 1), where set, wins over it.
    speedups: bool = True
    monitor: str = "val_accuracy"  # metric for early stopping and the best checkpoint
    early_stopping_patience: int = 2  # epochs without improvement; 0 disables early stopping
    seed: int = 42
    # XLA; auto: on for GPUs of compute capability 7.0+, off on CPU, where plain TF graphs were
    # faster for these models (measured). recipes/engine/devices.py resolves it.
    jit_compile: bool | Literal["auto"] = "auto"
    # Eager steps: no graph tracing, which costs tens of seconds per run; only pays for tiny models
    # and few steps (tests, smoke runs), and for debugging.
    run_eagerly: bool = False
    # auto: mixed bfloat16 on GPUs of compute capability 8.0+ and CPUs with native bf16, mixed
    # float16 (with loss scaling) on 7.x GPUs, else float32 (recipes/engine/devices.py)
    precision: Literal["auto", "float32", "mixed_bfloat16", "mixed_float16"] = "auto"
    # auto: all local GPUs (MirroredStrategy) when there are 2+, the cluster TF_CONFIG names
    # (MultiWorkerMirroredStrategy), else one device; see recipes/engine/distribute.py
    distribute: Literal["auto", "none", "mirrored", "multi_worker"] = "auto"
    # batch_size is the global batch (each replica takes batch_size / replicas); linear multiplies
    # the learning rate by the number of replicas
    scale_learning_rate: Literal["none", "linear"] = "none"


@dataclass
class RunConfig:
    LIMITS: ClassVar[dict[str, str]] = {"log_every_steps": ">= 0", "embeddings": ">= 0"}

    runs_dir: str = "runs"
    name: str = ""  # empty: a timestamp
    dir: str = ""  # the run's exact directory, instead of runs_dir/<recipe>/name (tuning uses it for trials)
    hparams: bool = True  # log the run as a session of TensorBoard's HParams dashboard (a search logs its trials)
    # TensorBoard (`keras-zoo tensorboard`): False writes no event files at all (history.csv and
    # metrics.json still hold every figure).
    tensorboard: bool = True
    log_every_steps: int = 50  # training loss (and metrics) every N steps; 0: per epoch only
    embeddings: int = (
        2000  # evaluation examples (sentences, entities) in the embedding projector; 0: none
    )
    profile: bool = False  # profile a few training steps (view with the `profile` extra installed)
    # False: export/model.keras only (what predict and evaluate load), no deployable SavedModel and its
    # model card, which take seconds to trace; `keras-zoo export RECIPE RUN` writes them later
    export: bool = True
    # auto: continue this run if it is interrupted or failed, else start it: what a restarted
    # Kubernetes pod (TFJob) needs, as it reruns the same command; never: --resume decides
    resume: Literal["never", "auto"] = "never"


@dataclass
class TuningConfig:
    """A hyperparameter search over this recipe's config (`keras-zoo tune`; ignored by `train`).

    `space` maps config keys to what to try (see tuning/space.py):
    `[a, b]` choices, `{min, max, sampling: linear|log, step}` ranges, `boolean`, `{fixed: value}`.
    """

    LIMITS: ClassVar[dict[str, str]] = {
        "max_trials": ">= 1",
        "executions_per_trial": ">= 1",
        "hyperband_factor": ">= 2",
        "hyperband_max_epochs": ">= 0",
        "max_retries_per_trial": ">= 0",
        "worker_timeout_s": "> 0",
        "seed": ">= 0",
    }

    algorithm: Literal["random", "bayesian", "hyperband", "grid"] = "bayesian"
    objective: str = (
        ""  # any metric the recipe logs (val_accuracy, val_macro_f1, ...); empty: train.monitor
    )
    direction: Literal["auto", "max", "min"] = "auto"  # auto: min for losses, else max
    max_trials: int = 10
    executions_per_trial: int = (
        1  # runs per trial with seeds seed, seed+1, ...; metrics are averaged
    )
    max_time: str = ""  # e.g. 90m, 2h: no trial starts after this; empty: no limit
    hyperband_factor: int = 3
    hyperband_max_epochs: int = 0  # 0: train.epochs
    max_retries_per_trial: int = (
        0  # a trial that crashes is retried this often, then recorded as failed
    )
    trial_process: Literal["subprocess", "in_process"] = (
        "subprocess"  # subprocess: memory never accumulates
    )
    worker_timeout_s: float = 120.0  # distributed: a worker silent this long is taken as dead
    seed: int = 0  # the search algorithm's seed
    space: dict[str, Any] = field(default_factory=dict)


def save_config(cfg: Any, path: Path) -> None:
    path.write_text(yaml.safe_dump(dataclasses.asdict(cfg), sort_keys=False))


def load_config(
    cls: type[C], path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()
) -> C:
    """Build a `cls` config from its defaults, a YAML file and `key.sub=value` overrides, in that
    order, and check every value against its section's `LIMITS`."""
    return load_config_and_keys(cls, path, overrides)[0]


def yaml_error(error: Exception) -> tuple[tuple[int, int] | None, str]:
    """`((line, column), problem)` of a YAML error, 1-based; the position is None where PyYAML
    does not know it."""
    mark = getattr(error, "problem_mark", None)
    problem = getattr(error, "problem", None) or str(error).splitlines()[0]
    return ((mark.line + 1, mark.column + 1) if mark is not None else None), problem


def load_config_and_keys(
    cls: type[C], path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()
) -> tuple[C, list[str]]:
    """`(config, keys)`: the config as `load_config` builds it, and the dotted keys that the file
    and the overrides set explicitly (what `--resume` must compare with the run's own config)."""
    values: dict = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise UserError(f"{path}: config file not found")
        try:
            loaded = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as e:
            position, problem = yaml_error(e)
            where = f"{position[0]}:{position[1]}:" if position else ""
            raise UserError(f"{path}:{where} invalid YAML ({problem})") from None
        if not isinstance(loaded, dict):
            raise UserError(f"{path}: a config must be a mapping of sections")
        values = loaded
    source = str(path) if path else "--set"
    keys = _mentioned_keys(cls, values, "")
    for item in overrides:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise UserError(f"--set {item!r}: expected KEY=VALUE, e.g. train.learning_rate=3e-5")
        hint = field_type(cls, key, "--set")
        node = values
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise UserError(f"--set {item!r}: '{part}' is not a section")
        node[leaf] = parse_value(raw, hint)
        keys.append(key)
        source = "--set" if path is None else f"{path} / --set"
    cfg = _build(cls, values, prefix="", source=source)
    check_config(cfg)
    return cfg, list(dict.fromkeys(keys))


def parse_value(raw: str, hint: Any) -> Any:
    """A `--set` value: the text itself for string keys (so `--name 2024-01-01` or `*.csv` stay
    text), else a YAML scalar (numbers, booleans, lists), falling back to the text when it is not
    valid YAML; the key's type check then names the key."""
    raw = raw.strip()
    if hint is str or (
        typing.get_origin(hint) is Literal
        and all(isinstance(c, str) for c in typing.get_args(hint))
    ):
        return raw
    if not raw:
        return ""
    try:
        return yaml.safe_load(raw)
    except yaml.YAMLError:
        return raw


def _mentioned_keys(cls: type, values: dict, prefix: str) -> list[str]:
    """The dotted keys a config file sets (a section's keys, not the section)."""
    keys = []
    hints = typing.get_type_hints(cls)
    for name, value in values.items():
        hint = hints.get(name)
        if hint is not None and dataclasses.is_dataclass(hint) and isinstance(value, dict):
            keys += _mentioned_keys(hint, value, f"{prefix}{name}.")
        else:
            keys.append(prefix + name)
    return keys


def value_at(cfg: Any, key: str) -> Any:
    """The value of dotted `key` in `cfg` (e.g. `train.learning_rate`)."""
    for part in key.split("."):
        cfg = getattr(cfg, part)
    return cfg


def check_config(cfg: Any, prefix: str = "") -> None:
    """Every value inside its section's `LIMITS` (e.g. `"epochs": ">= 1"`, `"dropout": "[0, 1)"`),
    checked before anything runs; a value outside is a one-line error naming the key."""
    limits: dict[str, str] = {}
    for klass in reversed(type(cfg).__mro__):  # a subclass's limits override its parent's
        limits.update(vars(klass).get("LIMITS", {}))
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if dataclasses.is_dataclass(value):
            check_config(value, f"{prefix}{f.name}.")
        elif (
            f.name in limits
            and isinstance(value, (int, float))
            and not _within(value, limits[f.name])
        ):
            raise UserError(f"{prefix}{f.name}: must be {_describe(limits[f.name])}, not {value}")


def _within(value: float, rule: str) -> bool:
    rule = rule.strip()
    if rule[0] in "[(":
        low, high = (float(x) for x in rule[1:-1].split(","))
        above = value >= low if rule[0] == "[" else value > low
        below = value <= high if rule[-1] == "]" else value < high
        return above and below
    op, bound = rule.split()
    return {
        ">=": value >= float(bound),
        ">": value > float(bound),
        "<=": value <= float(bound),
        "<": value < float(bound),
    }[op]


def _describe(rule: str) -> str:
    rule = rule.strip()
    if rule[0] in "[(":
        low, high = (x.strip() for x in rule[1:-1].split(","))
        return (
            f"{'at least' if rule[0] == '[' else 'more than'} {low} and "
            f"{'at most' if rule[-1] == ']' else 'less than'} {high}"
        )
    op, bound = rule.split()
    return {">=": "at least", ">": "more than", "<=": "at most", "<": "less than"}[op] + f" {bound}"


def _build(cls: type, values: dict, prefix: str, source: str, base: Any = None) -> Any:
    """`base` (default: the class's defaults) with `values` set; a section keeps the defaults its
    parent gives it (a recipe's own tuning space, say) for the keys `values` leaves out."""
    base = cls() if base is None else base
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    for key in values:
        if key not in fields:
            raise UserError(
                f"{source}: unknown config key '{prefix}{key}'"
                f"{closest(prefix + key, [prefix + f for f in fields], n=1)}"
            )
    kwargs = {}
    for name, value in values.items():
        if dataclasses.is_dataclass(hints[name]) and isinstance(value, dict):
            kwargs[name] = _build(
                hints[name], value, f"{prefix}{name}.", source, base=getattr(base, name)
            )
        else:
            kwargs[name] = _coerce(value, hints[name], f"{prefix}{name}", source)
    return dataclasses.replace(base, **kwargs)


def _coerce(value: Any, hint: Any, key: str, source: str) -> Any:
    origin = typing.get_origin(hint)
    if dataclasses.is_dataclass(hint):
        if not isinstance(value, dict):
            raise UserError(f"{source}: '{key}' is a section; set its keys, e.g. {key}.<key>=...")
        return _build(hint, value, prefix=key + ".", source=source)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(hint)
        if value is None and type(None) in args:
            return None
        options = [a for a in args if a is not type(None)]
        for arg in options:
            try:
                return _coerce(value, arg, key, source)
            except UserError:
                pass
        if len(options) == 1:
            return _coerce(value, options[0], key, source)  # its own message
        kinds = [
            ", ".join(map(str, typing.get_args(a)))
            if typing.get_origin(a) is Literal
            else a.__name__
            for a in options
        ]
        raise UserError(f"{source}: '{key}' must be {' or '.join(kinds)}, not {value!r}")
    if origin is Literal:
        choices = typing.get_args(hint)
        if value is False and "off" in choices:  # YAML 1.1 reads a bare `off` (or `no`) as False
            value = "off"
        if value not in choices:
            raise UserError(
                f"{source}: '{key}' must be one of {', '.join(map(str, choices))}, not {value!r}"
                f"{closest(str(value), map(str, choices))}"
            )
        return value
    if origin is dict:
        if not isinstance(value, dict):
            raise UserError(f"{source}: '{key}' must be a mapping, not {value!r}")
        return dict(value)
    if origin is list:
        if not isinstance(value, list):
            raise UserError(f"{source}: '{key}' must be a list, not {value!r}")
        (item,) = typing.get_args(hint)
        return [_coerce(v, item, key, source) for v in value]
    if hint is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if hint is float and isinstance(value, str):  # YAML reads 3e-5 (no dot) as a string
        try:
            return float(value)
        except ValueError:
            pass
    if hint in (int, bool, str) and type(value) is hint:
        return value
    if (
        hint is str
        and isinstance(value, (int, float, datetime.date))
        and not isinstance(value, bool)
    ):
        # YAML reads `name: 2024-01-01` as a date and `name: 7` as a number: names are text
        return str(value)
    if hint is Any:
        return value
    raise UserError(f"{source}: '{key}' must be {getattr(hint, '__name__', hint)}, not {value!r}")


def field_type(cls: type, key: str, source: str) -> Any:
    """The type of the dotted config key `key` of config class `cls` (e.g. `train.learning_rate` -> float)."""
    hint: Any = cls
    parts = key.split(".")
    for i, part in enumerate(parts):
        # a mapping key (tuning.space.<key>): any value
        if hint is dict or typing.get_origin(hint) is dict:
            return Any
        if not dataclasses.is_dataclass(hint):
            raise UserError(f"{source}: '{key}': '{'.'.join(parts[:i])}' is not a section")
        names = [f.name for f in dataclasses.fields(hint)]
        if part not in names:
            prefix = ".".join(parts[:i] + [""])
            raise UserError(
                f"{source}: unknown config key '{prefix}{part}'{closest(prefix + part, [prefix + n for n in names], n=1)}"
            )
        hint = typing.get_type_hints(hint)[part]
    if dataclasses.is_dataclass(hint):
        raise UserError(f"{source}: '{key}' is a section; name one of its keys")
    return hint


def with_values(cfg: C, values: dict[str, Any], source: str) -> C:
    """A copy of `cfg` with dotted keys set to `values`, checked as a config file's values are."""
    tree = dataclasses.asdict(cfg)
    for key, value in values.items():
        field_type(type(cfg), key, source)
        *parents, leaf = key.split(".")
        node = tree
        for part in parents:
            node = node[part]
        node[leaf] = value
    new = _build(type(cfg), tree, prefix="", source=source)
    check_config(new)
    return new


def flat_values(
    cfg: Any, sections: tuple[str, ...] = ("data", "augment", "model", "train", "few_shot")
) -> dict[str, Any]:
    """The config's scalar values as `{"train.learning_rate": 1e-4, ...}` (for the HParams dashboard)."""
    flat = {}
    for section in (s for s in sections if hasattr(cfg, s)):
        for key, value in dataclasses.asdict(getattr(cfg, section)).items():
            if isinstance(value, (bool, int, float, str)):
                flat[f"{section}.{key}"] = value
    return flat
