"""The executor interface, and the inline and process executors (Ray: bench/ray_executor.py; the names:
bench/executor_registry.py).

An executor's ``run(cells, on_record, on_progress)`` calls ``on_progress`` when a cell starts and after each
epoch (every executor streams the epochs back), and ``on_record`` with each finished cell's record, failures
included. Failure records (timeout, lost worker) are built here, for every executor. An ``on_progress`` that raises
``StopCell`` ends that cell at once (the tuner's pruner does): the executor stops it and hands the exception's
record to ``on_record`` instead of the cell's own.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.connection
import os
import signal
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from bench.conditions import oversubscription
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


class StopCell(BaseException):  # noqa: N818 - a control-flow signal, like KeyboardInterrupt
    """Raised by an ``on_progress`` callback to end its cell early; ``record`` is what the cell's record becomes.

    A BaseException so that it passes through the cell's "a failed cell is a result" handler (which catches
    Exception) when the callback runs inside the cell's own process (the inline executor).
    """

    def __init__(self, record: dict[str, Any]) -> None:
        super().__init__(record.get("error") or "stopped")
        self.record = record


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

    def with_parallel(self, parallel: int, cells: list[CellConfig]) -> Executor:
        """This executor running ``parallel`` of ``cells`` at once; a ConfigError where it cannot."""
        if parallel == 1:
            return self
        raise ConfigError(f"--parallel {parallel} needs the process or ray executor")

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
        from bench.accel import release_between_cells
        from bench.cell import run_cell

        for cell in cells:
            release_between_cells()  # no compiled graph, counter or cached CUDA block from the previous cell
            on_progress(Progress(cell))
            try:
                record = run_cell(cell, _epoch_reporter(cell, on_progress))
            except StopCell as stop:
                record = stop.record
            on_record(cell, record)


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
    ``parallel`` cells run at once (1 unless a caller such as ``bench tune --parallel`` asks for more).
    """

    timeout: float | None = None
    parallel: int = 1

    @classmethod
    def from_config(cls, run: RunConfig) -> ProcessExecutor:
        return cls(run.timeout)

    def concurrent_cells(self, cells: list[CellConfig]) -> int | None:
        return max(1, min(self.parallel, len(cells)))

    def with_parallel(self, parallel: int, cells: list[CellConfig]) -> ProcessExecutor:
        """Refused where the cells' threads, ``parallel`` times, would oversubscribe the cores."""
        crowded = oversubscription(max(cell.threads for cell in cells), parallel)
        if crowded:
            raise ConfigError(f"--parallel {parallel} would oversubscribe the CPU: {crowded}")
        return replace(self, parallel=parallel)

    def run(self, cells: list[CellConfig], on_record: OnRecord, on_progress: OnProgress) -> None:
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload(PRELOAD)
        queue = list(cells)
        running: list[_CellProcess] = []
        try:
            while queue or running:
                while queue and len(running) < max(1, self.parallel):
                    cell = queue.pop(0)
                    on_progress(Progress(cell))
                    running.append(_CellProcess(context, cell, self.timeout))
                multiprocessing.connection.wait([p.receiver for p in running], timeout=_POLL_SECONDS)
                for process in list(running):
                    record = process.poll(on_progress)
                    if record is not None:
                        running.remove(process)
                        on_record(process.cell, record)
        finally:
            for process in running:  # an interrupt (or an error) of the driver: nothing is left behind
                process.stop()


class _CellProcess:
    """One cell in its own forked process, polled by the driver without blocking."""

    def __init__(self, context, cell: CellConfig, timeout: float | None) -> None:
        from bench.worker import run_forked

        self.cell, self.timeout = cell, timeout
        self.log = tempfile.NamedTemporaryFile(mode="w+", suffix=".log")  # noqa: SIM115 - closed by stop()
        self.receiver, sender = context.Pipe(duplex=False)
        self.worker = context.Process(target=run_forked, args=(sender, cell.to_dict(), dict(os.environ), self.log.name))
        self.deadline = time.monotonic() + timeout if timeout else None
        self.oom_before = oom_kill_counts()
        try:
            self.worker.start()
        finally:
            sender.close()  # the child holds the only sending end: its death ends the stream

    def poll(self, on_progress: OnProgress) -> dict[str, Any] | None:
        """The cell's record once it has one (its own, a failure's, or a ``StopCell``'s); None while it runs."""
        try:
            while self.receiver.poll():
                message = self.receiver.recv()
                if message["event"] == "record":
                    self.stop(kill=False)  # the process ends by itself once its record is sent
                    return message["record"]
                on_progress(Progress(self.cell, message["epoch"], message["loss"], message["valid_slate_acc"]))
        except EOFError:  # the process ended without a record
            self.worker.join()
            record = self._lost_record()
            self.stop()
            return record
        except StopCell as stopped:
            self.stop()
            return stopped.record
        if self.deadline is not None and time.monotonic() > self.deadline:
            self.stop()
            return timeout_record(self.cell, self.timeout or 0)
        return None

    def stop(self, kill: bool = True) -> None:
        """Kill the process (``kill``) if it still runs, reap it, close its pipe and log."""
        if kill and self.worker.is_alive():
            self.worker.kill()
        if self.worker.pid is not None:
            self.worker.join()
        self.receiver.close()
        self.log.close()

    def _lost_record(self) -> dict[str, Any]:
        self.log.seek(0)
        tail = self.log.read()[-2000:].strip()
        code = self.worker.exitcode or 0
        cause = f"killed by signal {-code}" if code < 0 else f"exited with code {code}"
        # The OOM killer sends SIGKILL, but so does an operator: oom needs evidence.
        evidence = oom_evidence(self.oom_before, oom_kill_counts()) if code == -signal.SIGKILL else None
        oom = evidence is not None or is_allocation_failure(tail)
        killed = code < 0 and -code in EXTERNAL_SIGNALS
        if evidence:
            cause += f" (kernel OOM kill: {evidence})"
        return worker_lost_record(self.cell, f"worker {cause}: {tail}", oom=oom, killed=killed)
