"""The executor interface, and the inline and process executors (Ray: bench/ray_executor.py; the names:
bench/executor_registry.py).

An executor's ``run(cells, on_record, on_progress)`` calls ``on_progress`` when a cell starts and after each
epoch (where the executor can see epochs), and ``on_record`` with each finished cell's record, failures
included. Failure records (timeout, lost worker) are built here, for every executor.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.config import CellConfig, ConfigError, RunConfig
from bench.records import is_allocation_failure, new_record
from bench.train import EpochCallback


@dataclass(frozen=True)
class Progress:
    """A cell started (``epoch`` None) or finished an epoch."""

    cell: CellConfig
    epoch: int | None = None
    loss: float | None = None
    valid_slate_acc: float | None = None


OnRecord = Callable[[CellConfig, dict[str, Any]], None]
OnProgress = Callable[[Progress], None]


class Executor:
    """Runs cells and hands back one record per cell. A subclass is registered by name in
    bench/executor_registry.py."""

    @classmethod
    def check(cls, run: RunConfig) -> None:
        """A ConfigError, before any cell runs, when this executor cannot run ``run`` as configured."""

    @classmethod
    def from_config(cls, run: RunConfig) -> Executor:
        return cls()

    def concurrent_cells(self, cells: list[CellConfig]) -> int | None:
        """How many of ``cells`` run at the same time on this machine (None: unknown, e.g. a remote cluster)."""
        return 1

    def run(self, cells: list[CellConfig], on_record: OnRecord, on_progress: OnProgress) -> None:
        raise NotImplementedError


def timeout_record(cell: CellConfig, timeout: float) -> dict[str, Any]:
    return new_record(cell, "timeout", f"cell exceeded the per-cell timeout of {timeout:g} s")


def worker_lost_record(cell: CellConfig, cause: str, oom: bool, killed: bool = False) -> dict[str, Any]:
    """A cell whose process (or Ray worker) died before it could write its own record.

    ``oom`` only with evidence (an allocation failure in its output, the kernel's OOM-kill counter);
    ``killed``: ended by a signal from outside (kill -9, SIGTERM) without such evidence; else ``failed``.
    """
    return new_record(cell, "oom" if oom else "killed" if killed else "failed", cause)


# Signals that end a process from outside (an operator, a supervisor, the OOM killer), not a crash of its own.
EXTERNAL_SIGNALS = frozenset({signal.SIGKILL, signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT})


def oom_kill_counts() -> dict[str, int]:
    """The kernel's OOM-kill counters that can see this process's workers: system-wide (/proc/vmstat) and this
    process's memory cgroup and its parents (v2 memory.events, v1 memory.oom_control). Missing ones are left out."""
    counts: dict[str, int] = {}

    def read(path: Path, field: str = "oom_kill") -> None:
        try:
            for line in path.read_text().splitlines():
                name, _, value = line.partition(" ")
                if name == field:
                    counts[str(path)] = int(value)
        except (OSError, ValueError):
            pass

    read(Path("/proc/vmstat"))
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        lines = []
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, controllers, where = parts
        if controllers == "":
            base, name = Path("/sys/fs/cgroup"), "memory.events"
        elif "memory" in controllers.split(","):
            base, name = Path("/sys/fs/cgroup/memory"), "memory.oom_control"
        else:
            continue
        group = Path(where)
        for parent in (group, *group.parents):
            read(base / parent.relative_to("/") / name)
    return counts


def oom_evidence(before: dict[str, int], after: dict[str, int]) -> str | None:
    """Which OOM-kill counter went up between two readings, if any."""
    for source, count in after.items():
        if count > before.get(source, count):
            return f"{source} oom_kill {before[source]} -> {count}"
    return None


class InlineExecutor(Executor):
    """Every cell in this process: for debugging; a crash or hang is not contained."""

    @classmethod
    def check(cls, run: RunConfig) -> None:
        if run.timeout is not None:
            raise ConfigError("--timeout needs the process or ray executor (an inline cell cannot be stopped)")

    def run(self, cells: list[CellConfig], on_record: OnRecord, on_progress: OnProgress) -> None:
        from bench.cell import run_cell

        for cell in cells:
            on_progress(Progress(cell))
            on_record(cell, run_cell(cell, _epoch_reporter(cell, on_progress)))


def _epoch_reporter(cell: CellConfig, on_progress: OnProgress) -> EpochCallback:
    return lambda epoch, loss, acc: on_progress(Progress(cell, epoch, loss, acc))


# Imported once by the server that starts every cell's process, instead of once per cell: first its guard (the server
# dies with the driver: bench/forkserver_guard.py), then the harness, and torch._dynamo, which the FLOP counter
# (torch.utils.flop_counter) imports at its first use (with sympy: ~1.7 s).
PRELOAD = ["bench.forkserver_guard", "bench.worker", "torch._dynamo"]
_POLL_SECONDS = 0.2


@dataclass
class ProcessExecutor(Executor):
    """Each cell in a fresh process: its peak memory is its own; a crash, OOM or hang is contained.

    The processes are forked from a server started once per driver that has already imported torch, the
    registry and the harness (multiprocessing's forkserver with preload), so a cell does not pay the ~1.5 s
    of starting Python and importing torch; everything the cell computes happens in its own process.
    """

    timeout: float | None = None

    @classmethod
    def from_config(cls, run: RunConfig) -> ProcessExecutor:
        return cls(run.timeout)

    def run(self, cells: list[CellConfig], on_record: OnRecord, on_progress: OnProgress) -> None:
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload(PRELOAD)
        for cell in cells:
            on_progress(Progress(cell))
            on_record(cell, self._run_one(context, cell, on_progress))

    def _run_one(self, context, cell: CellConfig, on_progress: OnProgress) -> dict[str, Any]:
        from bench.worker import run_forked

        with tempfile.NamedTemporaryFile(mode="w+", suffix=".log") as log:
            receiver, sender = context.Pipe(duplex=False)
            worker = context.Process(target=run_forked, args=(sender, cell.to_dict(), dict(os.environ), log.name))
            deadline = time.monotonic() + self.timeout if self.timeout else None
            oom_before = oom_kill_counts()
            record, timed_out = None, False
            try:
                worker.start()
                sender.close()  # the child holds the only sending end: its death ends the stream
                while record is None:
                    if deadline is not None and time.monotonic() > deadline:
                        timed_out = True
                        break
                    if not receiver.poll(_POLL_SECONDS):
                        continue
                    try:
                        message = receiver.recv()
                    except EOFError:
                        break  # the process ended without a record
                    if message["event"] == "epoch":
                        on_progress(Progress(cell, message["epoch"], message["loss"], message["valid_slate_acc"]))
                    else:
                        record = message["record"]
            finally:
                if record is None and worker.is_alive():
                    worker.kill()
                if worker.pid is not None:
                    worker.join()
                receiver.close()
            if record is not None:
                return record
            if timed_out:
                return timeout_record(cell, self.timeout or 0)
            log.seek(0)
            tail = log.read()[-2000:].strip()
            code = worker.exitcode or 0
            cause = f"killed by signal {-code}" if code < 0 else f"exited with code {code}"
            # The OOM killer sends SIGKILL, but so does an operator: oom needs evidence.
            evidence = oom_evidence(oom_before, oom_kill_counts()) if code == -signal.SIGKILL else None
            oom = evidence is not None or is_allocation_failure(tail)
            killed = code < 0 and -code in EXTERNAL_SIGNALS
            if evidence:
                cause += f" (kernel OOM kill: {evidence})"
            return worker_lost_record(cell, f"worker {cause}: {tail}", oom=oom, killed=killed)
