"""Every `bench run` option and sweep-file key, derived from the config dataclasses' declared fields.

A field declared with ``option(...)`` (bench/declare.py) is, at once, a dataclass field, a CLI option (name, type,
help with its generated suffix, panel) and a type-checked sweep-file key. Adding an option is adding such a field;
nothing here changes.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterable
from typing import Any

from bench.config import (
    PROFILES,
    CellConfig,
    MeasureConfig,
    RunConfig,
    SweepConfig,
    TrainConfig,
    WorkloadConfig,
)
from bench.declare import PANELS, Option, check_one, declared
from bench.errors import ConfigError
from bench.executor_registry import ISOLATION, current_spelling
from rerankers.registry import did_you_mean

# Where options are declared, in the order they are listed; CELL_GROUPS hold the cell's own fields.
CELL_GROUPS = (WorkloadConfig, TrainConfig, MeasureConfig, CellConfig)
DECLARING = (SweepConfig, *CELL_GROUPS, RunConfig)
PROFILE_GROUPS = {WorkloadConfig: "workload", TrainConfig: "train", MeasureConfig: "measure"}  # set by profiles
ALIASES = (ISOLATION,)  # deprecated spellings, resolved by executor_registry.current_spelling

OPTIONS: dict[str, Option] = {o.name: o for cls in DECLARING for o in declared(cls)} | {o.name: o for o in ALIASES}
FILE_KEYS = frozenset(name for name, o in OPTIONS.items() if o.in_file)


def check_value(name: str, value: Any) -> Any:
    """``value`` if it fits the option ``name`` (a sweep axis also takes a list or a comma string), else ConfigError."""
    option = OPTIONS[name]
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
            check_one(option, item)
        return value
    if option.axis is not None and isinstance(value, str):
        if option.type is str:
            for item in filter(None, (v.strip() for v in value.split(","))):
                check_one(option, item)
        return value  # a comma list; numbers are parsed (and checked) with the axis
    if option.allow_inf and isinstance(value, str):
        return value  # "inf" or a number as text, parsed (and checked) with the option (sweep.noise_level)
    if isinstance(value, list):
        raise ConfigError(f"{option.label} takes one value, not a list: {value!r}")
    check_one(option, value)
    return value


def check_settings(settings: dict[str, Any], source: str | None = None) -> dict[str, Any]:
    """Known keys with values of the declared types, choices and ranges, the deprecated spellings resolved.

    ``source`` names the sweep file in errors, and limits the keys to those a file may hold; None is the command
    line, whose errors need no source (the user has just typed the value).
    """
    known = FILE_KEYS if source else set(OPTIONS)
    unknown = sorted(set(settings) - known)
    where = f"{source}: " if source else ""
    if unknown:
        hints = [f"{key}: {hint[2:]}" for key in unknown if (hint := did_you_mean(key, sorted(known)))]
        raise ConfigError(f"{where}unknown key(s) {', '.join(unknown)}" + "".join(f"; {h}" for h in hints))
    try:
        return {name: check_value(name, value) for name, value in current_spelling(settings).items()}
    except ConfigError as error:
        raise ConfigError(f"{where}{error}") from None


def with_run_defaults(settings: dict[str, Any]) -> dict[str, Any]:
    """``settings`` completed with what `bench run` takes for an option not given, where that is not the field's
    default: its declared ``run_default``, or its ``default_when`` default when the other option has that value."""
    completed = dict(settings)
    for option in OPTIONS.values():
        if completed.get(option.name) is not None:
            continue
        if option.run_default is not None:
            completed[option.name] = option.run_default
        elif option.default_when is not None:
            other, value, then = option.default_when
            if completed.get(other) == value:
                completed[option.name] = then
    return completed


def shown_default(option: Option) -> Any:
    """The default a plain `bench run` uses, for the help. A field that profiles set shows the default profile's
    value where it is a choice, and nothing where it is a size (which depends on --profile)."""
    if option.run_default is not None:
        return option.run_default
    group = PROFILE_GROUPS.get(option.owner)  # type: ignore[arg-type]
    if group is None:
        return option.default
    if option.choices is None:
        return None
    return getattr(PROFILES["default"].get(group) or option.owner(), option.name)  # type: ignore[misc]


def help_text(option: Option) -> str:
    return f"{option.help} {option.suffix(shown_default(option))}".strip()


def cell_scalars() -> list[Option]:
    """Single-valued options that are cell fields (the seed starts the seeds axis, so it is not one)."""
    return [o for o in OPTIONS.values() if o.owner in CELL_GROUPS and o.axis is None and o.name != "seed"]


def axes() -> list[Option]:
    """Sweep axes in the order their product is enumerated."""
    return sorted((o for o in OPTIONS.values() if o.axis is not None), key=lambda o: o.axis)


def cell_axes() -> list[Option]:
    """The sweep axes that are cell fields (every axis but the models), in product order: the report's axes."""
    return [o for o in axes() if o.owner in CELL_GROUPS]


def config_path(option: Option) -> tuple[str, ...]:
    """Where a cell field sits in a record's ``config``: ("workload", "batch_size"), ("seed",)..."""
    group = PROFILE_GROUPS.get(option.owner)  # type: ignore[arg-type]
    return (group, option.name) if group else (option.name,)


def cli_parameters(options: Iterable[Option] | None = None) -> list[inspect.Parameter]:
    """Every option (or those of ``options``: another command's) as a keyword parameter of a typer command, by
    help panel, a panel other than `bench run`'s first; every value defaults to None ("not given"), so that a
    sweep file's value or the profile's stands."""
    import typer
    from rich.markup import escape

    parameters = []
    listed = OPTIONS.values() if options is None else options
    for option in sorted(listed, key=lambda o: PANELS.index(o.panel) + 1 if o.panel in PANELS else 0):
        if option.repeatable:
            annotation: Any = list[option.type] | None  # type: ignore[name-defined]
        elif (option.axis is not None or option.allow_inf) and option.type is not str:
            annotation = str | None  # a comma list of values, or "inf": parsed and checked with the option
        else:
            annotation = option.type | None
        default = typer.Option(None, *option.cli_flags, help=escape(help_text(option)), rich_help_panel=option.panel)
        parameters.append(
            inspect.Parameter(option.name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=annotation)
        )
    return parameters
