"""Every `bench run` option and sweep-file key, derived from the config dataclasses' fields.

A field declared with ``config.option(...)`` is, at once, a dataclass field, a CLI option (name, type, help,
panel) and a type-checked sweep-file key. Adding an option is adding such a field; nothing here changes.
"""

from __future__ import annotations

import math
import typing
from dataclasses import dataclass, fields
from pathlib import Path
from types import NoneType, UnionType
from typing import Any

from bench.config import (
    EXECUTION,
    CellConfig,
    ConfigError,
    MeasureConfig,
    RunConfig,
    SweepConfig,
    TrainConfig,
    WorkloadConfig,
)

# Where options are declared, in the order they are listed; CELL_GROUPS hold the cell's own fields.
CELL_GROUPS = (WorkloadConfig, TrainConfig, MeasureConfig, CellConfig)
DECLARING = (SweepConfig, *CELL_GROUPS, RunConfig)


@dataclass(frozen=True)
class Option:
    name: str  # settings key, the field's name
    type: type  # type of one value: int, float, str, bool or Path
    help: str
    panel: str
    owner: type  # the dataclass whose field it is (None for a deprecated alias)
    flags: tuple[str, ...] = ()
    axis: int | None = None  # rank in the sweep's product order; None: a single value
    repeatable: bool = False  # a list of values given by repeating the flag
    in_file: bool = True  # may be a sweep-file key
    allow_inf: bool = False
    minimum: float | None = None  # every value >= minimum (> with exclusive_minimum)
    exclusive_minimum: bool = False
    maximum: float | None = None
    default: Any = None

    @property
    def label(self) -> str:
        return self.name.replace("_", "-")

    @property
    def cli_flags(self) -> tuple[str, ...]:
        if self.flags:
            return self.flags
        return (f"--{self.label}/--no-{self.label}",) if self.type is bool else (f"--{self.label}",)


def _value_type(annotation: Any) -> tuple[type, bool]:
    """(type of one value, whether it is a list) of a field annotation like ``int | None`` or ``list[str]``."""
    if isinstance(annotation, UnionType) or typing.get_origin(annotation) is typing.Union:
        (inner,) = [a for a in typing.get_args(annotation) if a is not NoneType]
        return _value_type(inner)
    if typing.get_origin(annotation) is list:
        return typing.get_args(annotation)[0], True
    return annotation, False


def declared(cls: type) -> list[Option]:
    """The options declared by ``cls``'s fields (``config.option``)."""
    hints = typing.get_type_hints(cls)
    options = []
    for f in fields(cls):
        spec = f.metadata.get("option")
        if spec is None:
            continue
        kind, repeatable = _value_type(hints[f.name])
        default = f.default_factory() if callable(f.default_factory) else f.default
        options.append(Option(f.name, kind, owner=cls, repeatable=repeatable, default=default, **spec))
    return options


ALIASES = (
    Option(
        "isolation",
        str,
        "Deprecated, use --executor: process = --executor process, none = --executor inline.",
        EXECUTION,
        owner=NoneType,
    ),
)
OPTIONS: dict[str, Option] = {o.name: o for cls in DECLARING for o in declared(cls)} | {o.name: o for o in ALIASES}
FILE_KEYS = frozenset(name for name, o in OPTIONS.items() if o.in_file)


def _type_name(kind: type) -> str:
    return {int: "an integer", float: "a number", str: "a string", bool: "true or false", Path: "a path"}[kind]


def _check_one(option: Option, value: Any) -> None:
    kind = option.type
    if kind is bool:
        ok = isinstance(value, bool)
    elif kind is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif kind is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    else:
        ok = isinstance(value, (str, Path))
    if not ok:
        raise ConfigError(f"{option.label} expects {_type_name(kind)}, got {value!r}")
    if isinstance(value, float) and not math.isfinite(value):
        if option.allow_inf and value == math.inf:
            return
        raise ConfigError(f"{option.label} must be a finite number, got {value!r}")
    _check_range(option, value)


INT_LIMIT = 2**63 - 1  # what torch and numpy take as an integer


def _check_range(option: Option, value: Any) -> None:
    """The declared range of a number (and, for every integer, what a 64-bit integer holds)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return
    low, high = option.minimum, option.maximum
    if low is not None and (value <= low if option.exclusive_minimum else value < low):
        wanted = "positive" if option.exclusive_minimum and low == 0 else f"at least {low:g}"
        raise ConfigError(f"{option.label} must be {wanted}, got {value!r}")
    if high is not None and value > high:
        raise ConfigError(f"{option.label} must be at most {high:g}, got {value!r}")
    if isinstance(value, int) and abs(value) > INT_LIMIT:
        raise ConfigError(f"{option.label} is out of range (a 64-bit integer), got {value!r}")


def check_value(name: str, value: Any, options: dict[str, Option] | None = None) -> Any:
    """``value`` if it fits the option ``name`` (a sweep axis also takes a list or a comma string), else ConfigError."""
    option = (options or OPTIONS)[name]
    if option.repeatable:
        items = value if isinstance(value, list) else [value]
        for item in items:
            if not isinstance(item, str):
                raise ConfigError(f"{option.label} expects strings, got {value!r}")
        return items
    if option.axis is not None and isinstance(value, list):
        if not value:
            raise ConfigError(f"{option.label} is empty")
        for item in value:
            _check_one(option, item)
        return value
    if option.axis is not None and isinstance(value, str) and option.type is not str:
        return value  # a comma list, parsed (and checked) with the axis
    if option.allow_inf and isinstance(value, str):
        return value  # "inf" or a number as text, parsed (and checked) with the option (sweep.noise_level)
    if isinstance(value, list):
        raise ConfigError(f"{option.label} takes one value, not a list: {value!r}")
    _check_one(option, value)
    return value


def check_settings(
    settings: dict[str, Any], source: str, command_line: bool = False, options: dict[str, Option] | None = None
) -> dict[str, Any]:
    """Known keys with values of the declared types; ``source`` names where they come from in errors.
    ``options``: another command's declarations instead of `bench run`'s."""
    known = set(options) if options is not None else set(OPTIONS) if command_line else FILE_KEYS
    unknown = sorted(set(settings) - known)
    if unknown:
        raise ConfigError(f"{source}: unknown key(s) {', '.join(unknown)}")
    try:
        return {name: check_value(name, value, options) for name, value in settings.items()}
    except ConfigError as error:
        raise ConfigError(f"{source}: {error}") from None


def cell_scalars() -> list[str]:
    """Single-valued options that are cell fields, passed to the cell config as they are."""
    special = {"seed", "initial_noise"}  # seed starts the seeds axis; initial_noise maps inf to None
    return [o.name for o in OPTIONS.values() if o.owner in CELL_GROUPS and o.axis is None and o.name not in special]


def axes() -> list[Option]:
    """Sweep axes in the order their product is enumerated."""
    return sorted((o for o in OPTIONS.values() if o.axis is not None), key=lambda o: o.axis)
