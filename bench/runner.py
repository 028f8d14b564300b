"""Runs a plan's cells on its executor, appending each record as it arrives.

A finished cell's record is appended (and fsynced) at once, so a killed run loses at most the cells in
flight, and re-running skips what is recorded. ``open_run`` is the one way into a run directory (checked
writable, then locked), and ``pending`` the one place that decides which cells run, which are retried and
which are kept.
"""

from __future__ import annotations

import sys
import warnings
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.conditions import oversubscription
from bench.config import CellConfig, RunConfig
from bench.executor import Executor, OnProgress
from bench.executor_registry import executor_class
from bench.records import RECORDS_FILE, RunLock, append_record, check_writable, latest_records


def make_executor(run: RunConfig) -> Executor:
    """The run's executor, from the registry, after its own check of the run (a ConfigError before any cell)."""
    kind = executor_class(run.executor)
    kind.check(run)
    return kind.from_config(run)


@dataclass
class RunSummary:
    ran: int = 0
    skipped: int = 0
    retried: Counter = field(default_factory=Counter)  # status of the earlier record -> cells run again
    statuses: Counter = field(default_factory=Counter)


def recorded_status(run_dir: Path) -> dict[str, str]:
    """The latest recorded status of every cell key in ``run_dir``."""
    path = run_dir / RECORDS_FILE
    return {r["key"]: r["status"] for r in latest_records(run_dir)} if path.exists() else {}


@dataclass(frozen=True)
class Pending:
    """What a run does with each of its cells, given what ``run_dir`` has recorded."""

    todo: list[CellConfig]  # the cells to run
    recorded: dict[str, str]  # the latest recorded status by key (nothing with --force: every cell runs)
    todo_keys: frozenset[str] = frozenset()

    @property
    def retried(self) -> Counter:
        """Earlier status -> how many cells of that status run again."""
        return Counter(self.recorded[key] for key in self.todo_keys if key in self.recorded)

    def action(self, cell: CellConfig) -> str:
        """run, retry (its earlier status) or recorded."""
        key = cell.key()
        if key not in self.todo_keys:
            return "recorded"
        return f"retry ({self.recorded[key]})" if key in self.recorded else "run"


def pending(cells: list[CellConfig], run_dir: Path, force: bool = False, keep_failed: bool = False) -> Pending:
    """Cells to run: those without an ``ok`` record in ``run_dir`` (with ``keep_failed``, without any record;
    with ``force``, all of them)."""
    status = {} if force else recorded_status(run_dir)
    todo = [c for c in cells if status.get(c.key()) != "ok" and not (keep_failed and c.key() in status)]
    return Pending(todo, status, frozenset(c.key() for c in todo))


def retried_line(retried: Counter) -> str | None:
    """What a run says about the cells it runs again because their record is not ok (None: there are none)."""
    if not retried:
        return None
    listed = ", ".join(f"{n} {s}" for s, n in sorted(retried.items()))
    return f"retrying {sum(retried.values())} cell(s) recorded as not ok ({listed}); --keep-failed keeps them"


@contextmanager
def open_run(run_dir: Path, records_file: str = RECORDS_FILE) -> Iterator[None]:
    """Enter a run directory: it must take records in ``records_file`` (a ConfigError before any compute), and it
    is locked for this process (re-entrant) so that a second bench process on it is refused."""
    check_writable(run_dir, records_file)
    with RunLock(run_dir):
        yield


def run_cells(
    cells: list[CellConfig],
    run_dir: Path,
    run: RunConfig,
    on_progress: OnProgress = lambda progress: None,
    on_done: Callable[[dict[str, Any]], None] = lambda record: None,
    tags: dict[str, Any] | None = None,
    executor: Executor | None = None,
) -> RunSummary:
    """Run every cell of ``cells`` not yet recorded ``ok`` in ``run_dir`` on ``run``'s executor (or ``executor``,
    one built from ``run`` and adjusted by the caller, as ``bench tune --parallel`` does), appending one record per
    cell, inside ``open_run``.

    A record that cannot be written (disk full) stops the run with ``RecordWriteError``; the file stays whole.
    """
    with open_run(run_dir):
        plan = pending(cells, run_dir, run.force, run.keep_failed)
        summary = RunSummary(skipped=len(cells) - len(plan.todo), retried=plan.retried)
        # Fields every record of this call carries besides its cell's own (bench tune adds its `tuning` role).
        extra = {"run": {"id": run_dir.name, "command": _command_line(), "executor": run.executor}, **(tags or {})}
        executor = executor or make_executor(run)
        if plan.todo:
            _warn_oversubscription(plan.todo, executor)

        def on_record(cell: CellConfig, record: dict[str, Any]) -> None:
            record.update(extra)
            append_record(run_dir / RECORDS_FILE, record)
            summary.ran += 1
            summary.statuses[record["status"]] += 1
            on_done(record)

        executor.run(plan.todo, on_record, on_progress)
    return summary


def _warn_oversubscription(cells: list[CellConfig], executor: Executor) -> None:
    """A warning when the cells running at the same time would ask for more threads than the cores."""
    concurrent = executor.concurrent_cells(cells)
    crowded = oversubscription(max(cell.threads for cell in cells), concurrent) if concurrent else None
    if crowded:
        warnings.warn(f"the run oversubscribes the CPU: {crowded}", stacklevel=3)


def _command_line() -> str | None:
    import shlex

    return shlex.join(["bench", *sys.argv[1:]]) if sys.argv and "bench" in sys.argv[0] else None
