"""Runs a plan's cells on its executor, appending each record as it arrives.

A finished cell's record is appended (and fsynced) at once, so a killed run loses at most the cells in
flight, and re-running skips what is recorded.
"""

from __future__ import annotations

import sys
import warnings
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.conditions import oversubscription, usable_cores
from bench.config import CellConfig, RunConfig
from bench.executor import Executor, InlineExecutor, OnProgress, ProcessExecutor
from bench.records import RECORDS_FILE, RunLock, append_record, latest_records


def make_executor(run: RunConfig) -> Executor:
    if run.executor == "inline":
        return InlineExecutor()
    if run.executor == "ray":
        from bench.ray_executor import RayExecutor

        return RayExecutor(run.timeout, run.ray_address, run.retries, run.ray_cpus)
    return ProcessExecutor(run.timeout)


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


def pending_cells(
    cells: list[CellConfig], run_dir: Path, force: bool = False, keep_failed: bool = False
) -> list[CellConfig]:
    """Cells to run: those without an ``ok`` record in ``run_dir`` (with ``keep_failed``, without any record;
    with ``force``, all of them)."""
    if force:
        return list(cells)
    status = recorded_status(run_dir)
    return [c for c in cells if status.get(c.key()) != "ok" and not (keep_failed and c.key() in status)]


def run_cells(
    cells: list[CellConfig],
    run_dir: Path,
    run: RunConfig,
    on_progress: OnProgress = lambda progress: None,
    on_done: Callable[[dict[str, Any]], None] = lambda record: None,
    tags: dict[str, Any] | None = None,
) -> RunSummary:
    """Run every cell of ``cells`` not yet recorded ``ok`` in ``run_dir`` on ``run``'s executor, appending one
    record per cell, under the run directory's lock (a second process on it gets a ConfigError).

    A record that cannot be written (disk full) stops the run with ``RecordWriteError``; the file stays whole.
    """
    with RunLock(run_dir):
        status = {} if run.force else recorded_status(run_dir)
        todo = pending_cells(cells, run_dir, run.force, run.keep_failed)
        summary = RunSummary(skipped=len(cells) - len(todo))
        summary.retried.update(status[c.key()] for c in todo if c.key() in status)
        # Fields every record of this call carries besides its cell's own (bench tune adds its `tuning` role).
        extra = {"run": {"id": run_dir.name, "command": _command_line(), "executor": run.executor}, **(tags or {})}
        if todo:
            crowded = _oversubscription(todo, run)
            if crowded:
                warnings.warn(f"the run oversubscribes the CPU: {crowded}", stacklevel=2)

        def on_record(cell: CellConfig, record: dict[str, Any]) -> None:
            record.update(extra)
            append_record(run_dir / RECORDS_FILE, record)
            summary.ran += 1
            summary.statuses[record["status"]] += 1
            on_done(record)

        make_executor(run).run(todo, on_record, on_progress)
    return summary


def _oversubscription(cells: list[CellConfig], run: RunConfig) -> str | None:
    """Why the cells would fight for the cores (None when they would not). Inline and process executors run
    one cell at a time; a local Ray cluster runs as many as its CPUs hold, each asking for its torch threads.
    A remote cluster's nodes are not known here."""
    threads = max(cell.threads for cell in cells)
    if run.executor != "ray":
        return oversubscription(threads, concurrent_cells=1)
    if run.ray_address is not None:
        return None
    concurrent = max(1, min(len(cells), (run.ray_cpus or usable_cores()) // max(threads, 1)))
    return oversubscription(threads, concurrent_cells=concurrent)


def _command_line() -> str | None:
    import shlex

    return shlex.join(["bench", *sys.argv[1:]]) if sys.argv and "bench" in sys.argv[0] else None
