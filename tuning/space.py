"""Search spaces: a recipe config's `tuning.space`, as Keras Tuner hyperparameters.

Each entry names a config key and what to try there:

    tuning:
      space:
        train.learning_rate: {min: 1.0e-5, max: 3.0e-4, sampling: log}   # float range (the key is a float)
        train.epochs: {min: 1, max: 4}                                    # int range (the key is an int)
        train.warmup_ratio: {min: 0.0, max: 0.2, step: 0.05}              # with a step (grid search needs one)
        train.batch_size: [16, 32]                                        # choices
        model.freeze_embeddings: boolean
        model.pooling: {fixed: mean}
        model:                                                            # keys may also nest by section
          dropout: {min: 0.0, max: 0.3}

Float or int follows the config key's own type, so a value always fits the config it is applied to.
"""

from __future__ import annotations

import re
import typing
from typing import Any, Literal

from recipes.engine.config import field_type, with_values
from zoo.errors import UserError

RANGE_KEYS = {"min", "max", "sampling", "step"}
# Hyperband's bookkeeping values; `tuner/epochs` is the number of epochs a trial trains.
HYPERBAND_EPOCHS = "tuner/epochs"


def flatten_space(space: dict, prefix: str = "") -> dict[str, Any]:
    """`{model: {dropout: spec}}` and `{model.dropout: spec}` alike become `{"model.dropout": spec}`."""
    flat = {}
    for key, spec in space.items():
        name = f"{prefix}{key}"
        is_spec = not isinstance(spec, dict) or spec.keys() & (RANGE_KEYS | {"fixed"})
        flat.update({name: spec} if is_spec else flatten_space(spec, name + "."))
    return flat


def build_hyperparameters(space: dict, config_class: type, source: str = "tuning.space"):
    """A `keras_tuner.HyperParameters` holding one hyperparameter per config key of `space`."""
    import keras_tuner

    hp = keras_tuner.HyperParameters()
    flat = flatten_space(space)
    if not flat:
        raise UserError(f"{source}: the search space is empty; declare at least one config key")
    for key, spec in flat.items():
        where = f"{source}.{key}"
        hint = field_type(config_class, key, source)
        if key.startswith("run.") or key.startswith("tuning."):
            raise UserError(f"{where}: run and tuning settings are not hyperparameters")
        if isinstance(spec, list):
            if not spec:
                raise UserError(f"{where}: an empty list of choices")
            hp.Choice(key, [_check_value(v, hint, where) for v in spec])
        elif spec == "boolean":
            if hint is not bool:
                raise UserError(
                    f"{where}: 'boolean' needs a true/false key, and this one is {_name(hint)}"
                )
            hp.Boolean(key)
        elif isinstance(spec, dict) and "fixed" in spec:
            hp.Fixed(key, _check_value(spec["fixed"], hint, where))
        elif isinstance(spec, dict) and spec.keys() <= RANGE_KEYS and {"min", "max"} <= spec.keys():
            _add_range(hp, key, spec, hint, where)
        else:
            raise UserError(
                f"{where}: expected [choices], {{min, max, sampling, step}}, 'boolean' or "
                f"{{fixed: value}}, not {spec!r}"
            )
    return hp


def _add_range(hp, key: str, spec: dict, hint: Any, where: str) -> None:
    sampling = spec.get("sampling", "linear")
    if sampling not in ("linear", "log"):
        raise UserError(f"{where}: sampling must be linear or log, not {sampling!r}")
    low, high, step = spec["min"], spec["max"], spec.get("step")
    numbers = [v for v in (low, high, step) if v is not None]
    if any(isinstance(v, bool) or not isinstance(_number(v), (int, float)) for v in numbers):
        raise UserError(f"{where}: min, max and step must be numbers")
    low, high = _number(low), _number(high)
    step = None if step is None else _number(step)
    if not low < high:
        raise UserError(f"{where}: min ({low}) must be below max ({high})")
    if sampling == "log" and low <= 0:
        raise UserError(f"{where}: log sampling needs min > 0")
    if hint is int:
        if not all(float(v).is_integer() for v in (low, high, step or 1)):
            raise UserError(
                f"{where}: the key is an integer; min, max and step must be whole numbers"
            )
        hp.Int(
            key, int(low), int(high), step=None if step is None else int(step), sampling=sampling
        )
    elif hint is float:
        hp.Float(key, float(low), float(high), step=step, sampling=sampling)
    else:
        raise UserError(
            f"{where}: a range needs a number key, and this one is {_name(hint)}; list the choices"
        )


def _number(value: Any) -> Any:
    """YAML reads 1e-5 (no dot) as a string."""
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


def _check_value(value: Any, hint: Any, where: str) -> Any:
    """Keras Tuner keeps ints, floats, strings and bools; the value must also fit the key."""
    value = _number(value) if hint is float else value
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    allowed = typing.get_args(hint) if typing.get_origin(hint) is Literal else None
    ok = (
        value in allowed
        if allowed
        else (isinstance(value, hint) and not (hint is int and isinstance(value, bool)))
    )
    if not ok:
        raise UserError(f"{where}: {value!r} is not a valid value for this {_name(hint)} key")
    return value


def _name(hint: Any) -> str:
    if typing.get_origin(hint) is Literal:
        return "one of " + ", ".join(map(str, typing.get_args(hint)))
    return getattr(hint, "__name__", str(hint))


def config_values(hp_values: dict[str, Any]) -> dict[str, Any]:
    """A trial's hyperparameter values as config keys (Hyperband's epoch budget sets train.epochs)."""
    values = {k: v for k, v in hp_values.items() if not k.startswith("tuner/")}
    if HYPERBAND_EPOCHS in hp_values:
        values["train.epochs"] = int(hp_values[HYPERBAND_EPOCHS])
    return values


def trial_config(base_cfg, hp_values: dict[str, Any], trial_id: str):
    """The recipe config a trial trains: the search's config with the trial's values set."""
    return with_values(base_cfg, config_values(hp_values), source=f"trial {trial_id}")


def parse_duration(text: str, where: str = "tuning.max_time") -> float | None:
    """`90m`, `2h`, `1h30m`, `45s` or plain seconds -> seconds; empty -> None. A bad value is an
    error naming `where`, the key it came from."""
    if not text:
        return None
    text = str(text).strip()
    if re.fullmatch(r"\d+(\.\d+)?", text):
        return float(text)
    parts = re.fullmatch(
        r"(?:(\d+(?:\.\d+)?)h)?\s*(?:(\d+(?:\.\d+)?)m)?\s*(?:(\d+(?:\.\d+)?)s)?", text
    )
    if not parts or not any(parts.groups()):
        raise UserError(f"{where}: {text!r} is not a duration; expected e.g. 45s, 90m, 2h or 1h30m")
    hours, minutes, seconds = (float(g or 0) for g in parts.groups())
    return hours * 3600 + minutes * 60 + seconds
