"""The executor interface, and the inline and process executors (Ray: bench/ray_executor.py).

An executor's ``run(cells, on_record, on_progress)`` calls ``on_progress`` when a cell starts and after each
epoch (where the executor can see epochs), and ``on_record`` with each finished cell's record, failures
included. Failure records (timeout, lost worker) are built here, for every executor.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from bench.config import CellConfig
from bench.records import new_record


@dataclass(frozen=True)
class Progress:
    """A cell started (``epoch`` None) or finished an epoch."""

    cell: CellConfig
    epoch: int | None = None
    loss: float | None = None
    valid_slate_acc: float | None = None


OnRecord = Callable[[CellConfig, dict[str, Any]], None]
OnProgress = Callable[[Progress], None]


class Executor(Protocol):
    def run(self, cells: list[CellConfig], on_record: OnRecord, on_progress: OnProgress) -> None: ...


def timeout_record(cell: CellConfig, timeout: float) -> dict[str, Any]:
    return new_record(cell, "timeout", f"cell exceeded the per-cell timeout of {timeout:g} s")


def worker_lost_record(cell: CellConfig, cause: str, oom: bool) -> dict[str, Any]:
    """A cell whose process (or Ray worker) died before it could write its own record."""
    return new_record(cell, "oom" if oom else "failed", cause)


class InlineExecutor:
    """Every cell in this process: for debugging; a crash or hang is not contained."""

    def run(self, cells: list[CellConfig], on_record: OnRecord, on_progress: OnProgress) -> None:
        from bench.cell import run_cell

        for cell in cells:
            on_progress(Progress(cell))
            on_record(cell, run_cell(cell, _epoch_reporter(cell, on_progress)))


def _epoch_reporter(cell: CellConfig, on_progress: OnProgress) -> Callable[[int, float, float], None]:
    return lambda epoch, loss, acc: on_progress(Progress(cell, epoch, loss, acc))


@dataclass
class ProcessExecutor:
    """Each cell in a fresh process: its peak memory is its own; a crash, OOM or hang is contained."""

    timeout: float | None = None

    def run(self, cells: list[CellConfig], on_record: OnRecord, on_progress: OnProgress) -> None:
        for cell in cells:
            on_progress(Progress(cell))
            on_record(cell, self._run_one(cell, on_progress))

    def _run_one(self, cell: CellConfig, on_progress: OnProgress) -> dict[str, Any]:
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

            watchdog = threading.Timer(self.timeout, expire) if self.timeout else None
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
                        on_progress(Progress(cell, message["epoch"], message["loss"], message["valid_slate_acc"]))
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
                return timeout_record(cell, self.timeout or 0)
            stderr.seek(0)
            tail = stderr.read()[-2000:].strip()
            cause = f"killed by signal {-code}" if code < 0 else f"exited with code {code}"
            return worker_lost_record(cell, f"worker {cause}: {tail}", oom=code == -9)  # the OOM killer sends SIGKILL
