"""An option declared once: ``option()`` makes a dataclass field that is also a `bench run` flag and a sweep-file
key. Its declaration (type, choices, range, default) gives the help suffix (``a | b | c [default]``) and every check
of a value: on the command line, in a sweep file (bench/options.py) and in ``config.validate``.
"""

from __future__ import annotations

import math
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from functools import cache
from pathlib import Path
from types import NoneType, UnionType
from typing import Any

from bench.errors import ConfigError
from rerankers.registry import did_you_mean

INT_LIMIT = 2**63 - 1  # what torch and numpy take as an integer
# Help panels of `bench run`, in the order they are shown.
WORKLOAD = "Workload"
MODELS = "Models and training"
MEASUREMENT = "Measurement"
EXECUTION = "Execution"
OUTPUT = "Output"
PANELS = (WORKLOAD, MODELS, MEASUREMENT, EXECUTION, OUTPUT)
POSITIVE = {"minimum": 0, "exclusive_minimum": True}  # a range: every value > 0

# Choices: names, names with what each means, or a function giving either (a registry's names, asked when used).
Choices = Sequence[str] | Mapping[str, str] | Callable[[], Sequence[str] | Mapping[str, str]]


@dataclass(frozen=True)
class Option:
    """What a declared field is as an option; ``declared(cls)`` gives those of a dataclass."""

    name: str  # settings key, the field's name
    type: type  # type of one value: int, float, str, bool or Path
    help: str
    panel: str
    owner: type | None  # the dataclass whose field it is (None for a deprecated spelling)
    flags: tuple[str, ...] = ()  # CLI spellings; default --the-name
    axis: int | None = None  # rank in the sweep's product order; None: a single value
    repeatable: bool = False  # a list of values given by repeating the flag
    in_file: bool = True  # may be a sweep-file key
    allow_inf: bool = False  # a float that may be given as inf, which the cell stores as None
    choices: Choices | None = None
    minimum: float | None = None  # every value >= minimum (> with exclusive_minimum)
    exclusive_minimum: bool = False
    maximum: float | None = None
    default: Any = None
    run_default: Any = None  # what `bench run` takes when the option is not given, where it is not ``default``
    default_when: tuple[str, str, Any] | None = None  # (option, value, this option's default when it has that value)
    applies_to: tuple[str, str] | None = None  # (option, value): elsewhere this option must keep its default
    noun: str | None = None  # its name in reports and messages ("slate length T"); default: the label, spaced
    check: Callable[[Any], None] | None = None  # a rule of its own beyond type, choices and range

    @property
    def label(self) -> str:
        return self.name.replace("_", "-")

    @property
    def title(self) -> str:
        return self.noun or self.label.replace("-", " ")

    @property
    def cli_flags(self) -> tuple[str, ...]:
        if self.flags:
            return self.flags
        return (f"--{self.label}/--no-{self.label}",) if self.type is bool else (f"--{self.label}",)

    def choice_names(self) -> tuple[str, ...]:
        return tuple(_choices(self.choices))

    def suffix(self, shown_default: Any) -> str:
        """``a | b (what b is) | c [default]``: the choices and the default a plain `bench run` uses."""
        parts = []
        if self.choices is not None:
            named = _choices(self.choices)
            meanings = named if isinstance(named, Mapping) else {}
            parts.append(" | ".join(f"{c} ({meanings[c]})" if meanings.get(c) else c for c in named))
        if shown_default not in (None, []) and self.type is not bool:
            when = ""
            if self.default_when is not None:
                other, value, then = self.default_when
                when = f"; {then} with --{other.replace('_', '-')} {value}"
            parts.append(f"[{shown_default}{when}]")
        return " ".join(parts)


def _choices(choices: Choices | None) -> Sequence[str] | Mapping[str, str]:
    named = choices() if callable(choices) else choices
    return named if named is not None else ()


def option(default: Any = None, help: str = "", panel: str = WORKLOAD, **declaration: Any) -> Any:
    """A dataclass field that is also a `bench run` option and a sweep-file key (bench/options.py).

    ``declaration`` takes the fields of ``Option`` (``axis``, ``flags``, ``in_file``, ``choices``, ``minimum``,
    ``maximum``, ``exclusive_minimum``, ``allow_inf``, ``run_default``, ``default_when``, ``applies_to``, ``noun``,
    ``check``) and ``factory`` (a default factory instead of ``default``).
    """
    factory = declaration.pop("factory", None)
    metadata = {"option": {"help": help, "panel": panel, **declaration}}
    if factory is not None:
        return field(default_factory=factory, metadata=metadata)
    return field(default=default, metadata=metadata)


def _value_type(annotation: Any) -> tuple[type, bool]:
    """(type of one value, whether it is a list) of a field annotation like ``int | None`` or ``list[str]``."""
    if isinstance(annotation, UnionType) or typing.get_origin(annotation) is typing.Union:
        (inner,) = [a for a in typing.get_args(annotation) if a is not NoneType]
        return _value_type(inner)
    if typing.get_origin(annotation) is list:
        return typing.get_args(annotation)[0], True
    return annotation, False


@cache
def declared(cls: type) -> tuple[Option, ...]:
    """The options declared by the fields of the dataclass ``cls``, in field order."""
    hints = typing.get_type_hints(cls)
    options = []
    for f in fields(cls):
        spec = f.metadata.get("option")
        if spec is None:
            continue
        kind, repeatable = _value_type(hints[f.name])
        default = f.default_factory() if callable(f.default_factory) else f.default
        options.append(Option(f.name, kind, owner=cls, repeatable=repeatable, default=default, **spec))
    return tuple(options)


def declared_option(cls: type, name: str) -> Option:
    """The option the field ``name`` of the dataclass ``cls`` declares."""
    return next(o for o in declared(cls) if o.name == name)


def _type_name(kind: type) -> str:
    return {int: "an integer", float: "a number", str: "a string", bool: "true or false", Path: "a path"}[kind]


def check_one(option: Option, value: Any) -> None:
    """A ConfigError naming the option unless ``value`` is one value of its type, choices and range."""
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
    if option.choices is not None:
        known = option.choice_names()
        if value not in known:
            suggestion = did_you_mean(value, known)
            raise ConfigError(f"unknown {option.title} {value!r}{suggestion} (known: {', '.join(known)})")
    _check_range(option, value)
    if option.check is not None:
        option.check(value)


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


def check_fields(config: Any) -> None:
    """Every declared field of the dataclass instance ``config``: its type, choices, range and own rule.

    None is a field's "not set" (the cell stores an inf ``allow_inf`` value as None), so it is not checked.
    """
    for declared_option in declared(type(config)):
        value = getattr(config, declared_option.name)
        if value is None:
            continue
        if declared_option.allow_inf and value == math.inf:
            raise ConfigError(f"{declared_option.label} must be finite in a cell (None stands for inf), got inf")
        for item in value if isinstance(value, list) else [value]:
            check_one(declared_option, item)


def check_applies(config: Any) -> None:
    """An option declared ``applies_to=(other, value)`` keeps its default unless ``other`` has that value."""
    for declared_option in declared(type(config)):
        if declared_option.applies_to is None:
            continue
        other, wanted = declared_option.applies_to
        actual = getattr(config, other)
        if actual != wanted and getattr(config, declared_option.name) != declared_option.default:
            flag = other.replace("_", "-")
            raise ConfigError(f"{declared_option.label} applies to --{flag} {wanted} only, not to --{flag} {actual}")
