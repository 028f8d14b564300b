"""The `bench` commands, one module each: run, tune, list, report, compare.

A module of this package registers its command with ``@command(name, order)`` on the typer callback (its
docstring is the command's help, its parameters the options). ``commands()`` imports every module here and
bench/cli.py adds what they registered, so a new command is one new module and nothing else changes.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass

from rerankers.registry import Registry


@dataclass(frozen=True)
class Command:
    name: str
    order: int  # its place in `bench --help`, smallest first
    callback: Callable[..., None]


_COMMANDS: Registry[Command] = Registry("command")


def command(name: str, order: int = 100) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """Function decorator registering a typer callback as the command ``name``; a duplicate name raises."""

    def register(callback: Callable[..., None]) -> Callable[..., None]:
        _COMMANDS.add(name, Command(name, order, callback))
        return callback

    return register


def commands() -> list[Command]:
    """Every command of this package, in help order."""
    for module in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{module.name}")
    return sorted(_COMMANDS.values(), key=lambda c: (c.order, c.name))
