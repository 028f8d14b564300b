"""Runs cells one after another, each in its own process by default, appending records.

A finished cell's record is appended (and fsynced) before the next cell starts, so a
killed run loses at most the cell in flight, and re-running skips what is recorded.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import threading
import warnings
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.cell import new_record, run_cell
from bench.conditions import oversubscription
from bench.config import CellConfig
from bench.records import RECORDS_FILE, append_record, load_records

ISOLATIONS = ("process", "none")
EXECUTORS = ("local", "ray")
EpochCallback = Callable[[int, float, float], None]


def _run_in_subprocess(cell: CellConfig, on_epoch: EpochCallback, timeout: float | None) -> dict[str, Any]:
    with tempfile.TemporaryFile(mode="w+") as stderr:
        # Its own session: a Ctrl-C reaches only the driver, which then stops the worker.
        worker = subprocess.Popen(
            [sys.executable, "-m", "bench.worker"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
            start_new_session=True,
        )
        timed_out = threading.Event()

        def expire() -> None:
            timed_out.set()
            worker.kill()

        watchdog = threading.Timer(timeout, expire) if timeout else None
        record = None
        try:
            if watchdog:
                watchdog.start()
            assert worker.stdin is not None and worker.stdout is not None
            worker.stdin.write(json.dumps(cell.to_dict()))
            worker.stdin.close()
            for line in worker.stdout:
                try:
                    message = json.loads(line)
                except json.JSONDecodeError:
                    continue  # stray output from a library
                if message.get("event") == "epoch":
                    on_epoch(message["epoch"], message["loss"], message["valid_slate_acc"])
                elif message.get("event") == "record":
                    record = message["record"]
            code = worker.wait()
        finally:
            if watchdog:
                watchdog.cancel()
            if worker.poll() is None:
                worker.kill()
                worker.wait()
        if record is not None:
            return record
        if timed_out.is_set():
            return new_record(cell, "timeout", f"cell exceeded the per-cell timeout of {timeout:g} s")
        stderr.seek(0)
        tail = stderr.read()[-2000:].strip()
        cause = f"killed by signal {-code}" if code < 0 else f"exited with code {code}"
        status = "oom" if code == -9 else "failed"  # the kernel's OOM killer sends SIGKILL
        return new_record(cell, status, f"worker {cause}: {tail}")


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
    isolation: str = "process",
    timeout: float | None = None,
    force: bool = False,
    on_start: Callable[[CellConfig], None] = lambda cell: None,
    on_epoch: EpochCallback = lambda epoch, loss, acc: None,
    on_done: Callable[[dict[str, Any]], None] = lambda record: None,
    extra: dict[str, Any] | None = None,
    executor: str = "local",
    ray_options: dict[str, Any] | None = None,
) -> RunSummary:
    """Run every cell not already recorded in ``run_dir``, appending one record per cell."""
    todo = pending_cells(cells, run_dir, force)
    summary = RunSummary(skipped=len(cells) - len(todo))
    if executor == "local" and todo:  # one cell at a time
        crowded = oversubscription(max(cell.threads for cell in todo), concurrent_cells=1)
        if crowded:
            warnings.warn(f"the run oversubscribes the CPU: {crowded}", stacklevel=2)

    def finish(record: dict[str, Any]) -> None:
        record.update(extra or {})
        append_record(run_dir / RECORDS_FILE, record)
        summary.ran += 1
        summary.statuses[record["status"]] += 1
        on_done(record)

    if executor == "ray":
        from bench.ray_executor import run_on_ray

        run_on_ray(todo, lambda cell, record: finish(record), timeout=timeout, **(ray_options or {}))
        return summary
    for cell in todo:
        on_start(cell)
        if isolation == "process":
            finish(_run_in_subprocess(cell, on_epoch, timeout))
        else:
            finish(run_cell(cell, on_epoch))
    return summary
