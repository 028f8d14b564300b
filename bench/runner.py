"""Runs a plan's cells on its executor, appending each record as it arrives.

A finished cell's record is appended (and fsynced) at once, so a killed run loses at most the cells in
flight, and re-running skips what is recorded.
"""

from __future__ import annotations

import sys
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.config import CellConfig, RunConfig
from bench.executor import Executor, InlineExecutor, OnProgress, ProcessExecutor
from bench.records import RECORDS_FILE, append_record, load_records


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
    statuses: Counter = field(default_factory=Counter)


def pending_cells(cells: list[CellConfig], run_dir: Path, force: bool = False) -> list[CellConfig]:
    """Cells without a record in ``run_dir`` (all of them with ``force``)."""
    path = run_dir / RECORDS_FILE
    done = {r["key"] for r in load_records(path)} if path.exists() and not force else set()
    return [c for c in cells if c.key() not in done]


def run_cells(
    cells: list[CellConfig],
    run_dir: Path,
    run: RunConfig,
    on_progress: OnProgress = lambda progress: None,
    on_done: Callable[[dict[str, Any]], None] = lambda record: None,
    tags: dict[str, Any] | None = None,
) -> RunSummary:
    """Run every cell not already recorded in ``run_dir`` on ``run``'s executor, appending one record per cell."""
    todo = pending_cells(cells, run_dir, run.force)
    summary = RunSummary(skipped=len(cells) - len(todo))
    # Fields every record of this call carries besides its cell's own (bench tune adds its `tuning` role).
    extra = {"run": {"id": run_dir.name, "command": _command_line(), "executor": run.executor}, **(tags or {})}

    def on_record(cell: CellConfig, record: dict[str, Any]) -> None:
        record.update(extra)
        append_record(run_dir / RECORDS_FILE, record)
        summary.ran += 1
        summary.statuses[record["status"]] += 1
        on_done(record)

    make_executor(run).run(todo, on_record, on_progress)
    return summary


def _command_line() -> str | None:
    import shlex

    return shlex.join(["bench", *sys.argv[1:]]) if sys.argv and "bench" in sys.argv[0] else None
