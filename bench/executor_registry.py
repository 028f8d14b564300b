"""The executor registry: each executor's name, what it does, and the class that runs it.

The class is named as ``module:Class`` and imported only when a run builds its executor
(``runner.make_executor``), so that checking a name, planning a run and showing the help import no executor.
An executor class has ``check(run_config)`` (a ConfigError before any cell when it cannot run that run),
``from_config(run_config)`` and ``run(cells, on_record, on_progress)`` (bench/executor.py, ``Executor``).

The deprecated spellings are resolved here too: ``--executor local`` and ``--isolation process|none``.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any

from bench.declare import EXECUTION, Option, check_one
from bench.errors import ConfigError
from rerankers.registry import Registry


@dataclass(frozen=True)
class ExecutorEntry:
    path: str  # "module:Class"
    what: str  # one line for `bench run --help`


EXECUTORS: Registry[ExecutorEntry] = Registry("executor", ConfigError)


def register_executor(name: str, path: str, what: str) -> None:
    """Add the executor ``name``, run by the class at ``path`` ("module:Class"); a duplicate name raises."""
    EXECUTORS.add(name, ExecutorEntry(path, what))


register_executor("inline", "bench.executor:InlineExecutor", "in this process, for debugging")
register_executor("process", "bench.executor:ProcessExecutor", "each cell in a fresh process")
register_executor("ray", "bench.ray_executor:RayExecutor", "on a Ray cluster")


def executor_choices() -> dict[str, str]:
    """Every executor's name and what it does, in the order they were registered."""
    return {name: entry.what for name, entry in EXECUTORS.items()}


def executor_class(name: str) -> type:
    """The class that runs the executor ``name`` (imported now); an unknown name raises with the known ones."""
    module, _, attribute = EXECUTORS.lookup(name).path.partition(":")
    return getattr(importlib.import_module(module), attribute)


# --isolation VALUE, the deprecated spelling of --executor EXECUTOR.
_ISOLATED = {"process": "process", "none": "inline"}
ISOLATION = Option(
    "isolation",
    str,
    "Deprecated, use --executor.",
    EXECUTION,
    owner=None,
    choices={value: f"= --executor {executor}" for value, executor in _ISOLATED.items()},
)
LOCAL = "local"  # deprecated --executor value: process, or inline with --isolation none


def current_spelling(settings: dict[str, Any]) -> dict[str, Any]:
    """``settings`` with the deprecated spellings replaced: ``isolation`` removed, ``executor: local`` resolved."""
    settings = dict(settings)
    isolation = settings.pop(ISOLATION.name, None)
    if isolation is not None:
        check_one(ISOLATION, isolation)
    if settings.get("executor", LOCAL) == LOCAL and (isolation is not None or "executor" in settings):
        settings["executor"] = _ISOLATED[isolation or "process"]
    return settings
