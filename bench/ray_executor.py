"""Runs cells as Ray tasks, each in a fresh worker process, streaming records back to the driver.

The driver alone appends records, as each cell finishes, so resume works exactly as for local
runs. Each task reports its epochs to an ``EpochChannel`` actor that the driver drains, so progress and the
tuner's pruner see Ray cells' epochs as they see local ones. Install with ``pip install "rerank-bench[ray]"``.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Any

from bench.conditions import default_torch_threads, usable_cores
from bench.config import CellConfig, ConfigError, RunConfig
from bench.executor import (
    Executor,
    OnProgress,
    OnRecord,
    Progress,
    StopCell,
    timeout_record,
    worker_lost_record,
)


def require_ray():
    try:
        import ray
    except ImportError:
        raise ConfigError('--executor ray needs Ray, which is not installed: pip install "rerank-bench[ray]"') from None
    return ray


CONNECT_TIMEOUT_S = 15.0  # how long a --ray-address may take to answer before the run is refused


def check_reachable(address: str | None, timeout: float = CONNECT_TIMEOUT_S) -> None:
    """A ConfigError, before anything runs, when ``host:port`` of a Ray cluster does not accept a connection.

    ``ray.init`` itself retries an unreachable address for minutes; ``auto`` and a new local cluster are not
    checked here.
    """
    if not address or address == "auto" or address.startswith("local"):
        return
    target = address.split("://", 1)[-1].rstrip("/")
    host, sep, port = target.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise ConfigError(f"--ray-address must be HOST:PORT, ray://HOST:PORT or auto, got {address!r}")
    import socket

    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout):
            pass
    except OSError as error:
        reason = "timed out" if isinstance(error, TimeoutError) else (error.strerror or str(error))
        raise ConfigError(
            f"cannot reach the Ray cluster at {address} within {timeout:g} s ({reason}); is it running?"
        ) from None


def cell_threads(cell: CellConfig, cluster_cpus: int | None = None) -> int:
    """The torch threads a cell runs with on Ray, and the CPUs it asks for: its own, or (threads 0) the driver's
    default, what the same cell would use on a local executor, at most the cluster's CPUs (a task asking for more
    would never be scheduled)."""
    threads = cell.threads or default_torch_threads()
    return max(1, min(threads, cluster_cpus)) if cluster_cpus else threads


class EpochChannel:
    """A Ray actor holding the epochs that running tasks report, until the driver drains them."""

    def __init__(self) -> None:
        self.events: list[tuple[int, int, float, float]] = []

    def report(self, token: int, epoch: int, loss: float, acc: float) -> None:
        self.events.append((token, epoch, loss, acc))

    def drain(self) -> list[tuple[int, int, float, float]]:
        events, self.events = self.events, []
        return events


def _run_cell_task(cell_dict: dict[str, Any], channel, token: int, threads: int) -> dict[str, Any]:
    """One cell in a Ray worker, with its threads set before anything runs: Ray starts a worker with
    OMP_NUM_THREADS set to the task's CPUs (1 unless asked), which would otherwise be torch's default in the
    cell's data generation and, for a cell with threads 0, in all of it. Its epochs go to ``channel``."""
    import ray
    import torch

    from bench.cell import run_cell

    os.environ["OMP_NUM_THREADS"] = str(threads)
    torch.set_num_threads(threads)

    def on_epoch(epoch: int, loss: float, acc: float) -> None:
        # Waited for, so that every epoch of a task is in the channel before the task's record is.
        ray.get(channel.report.remote(token, epoch, loss, acc))

    return run_cell(CellConfig.from_dict(cell_dict), on_epoch)


def _is_oom(error: BaseException, ray) -> bool:
    return isinstance(error, getattr(ray.exceptions, "OutOfMemoryError", ()))


def run_on_ray(
    cells: list[CellConfig],
    on_done: OnRecord,
    on_progress: OnProgress = lambda progress: None,
    address: str | None = None,
    retries: int = 0,
    timeout: float | None = None,
    num_cpus: int | None = None,
) -> None:
    """Run ``cells`` on a Ray cluster (a new local one when ``address`` is None)."""
    ray = require_ray()
    plugins = os.environ.get("RERANK_BENCH_PLUGINS")
    env = {"RERANK_BENCH_PLUGINS": plugins} if plugins else {}
    started_here = not ray.is_initialized()
    if started_here:
        check_reachable(address)
        ray.init(
            address=address,
            num_cpus=num_cpus if address is None else None,
            include_dashboard=False,
            log_to_driver=False,
            runtime_env={"env_vars": env} if env else None,
        )
    try:
        _run_tasks(ray, cells, on_done, on_progress, retries, timeout)
    finally:
        if started_here:
            ray.shutdown()


def _run_tasks(ray, cells: list[CellConfig], on_done: OnRecord, on_progress: OnProgress, retries: int, timeout) -> None:
    """Submit the cells as tasks, as many at once as the cluster holds; stream their epochs and records back."""
    # max_calls=1: every cell gets a fresh worker process, so its peak RSS is its own and
    # nothing leaks between cells; retries cover a worker or node lost mid-cell.
    task = ray.remote(max_calls=1, max_retries=retries, retry_exceptions=False)(_run_cell_task)
    channel = ray.remote(num_cpus=0)(EpochChannel).remote()
    queue = list(enumerate(cells))
    # Submit only as many cells as the cluster can run at once, so that a cell's clock
    # (for --timeout) starts when it can actually start.
    cluster_cpus = int(ray.cluster_resources().get("CPU", 0)) or None
    capacity = _capacity(ray, cells, cluster_cpus)
    running: dict[Any, tuple[int, CellConfig, float]] = {}
    while queue or running:
        while queue and len(running) < capacity:
            token, cell = queue.pop(0)
            threads = cell_threads(cell, cluster_cpus)
            options: dict[str, Any] = {"num_cpus": threads}
            if cell.device == "cuda":
                options["num_gpus"] = 1
            on_progress(Progress(cell))
            ref = task.options(**options).remote(cell.to_dict(), channel, token, threads)
            running[ref] = (token, cell, time.monotonic())
        ready, _ = ray.wait(list(running), num_returns=1, timeout=0.5)
        # The epochs first: a finished task's epochs are all in the channel by now, and may stop it (StopCell).
        for ref, record in _relay_epochs(ray, channel, running, on_progress):
            ray.cancel(ref, force=True)
            on_done(running.pop(ref)[1], record)
        for ref in ready:
            if ref in running:  # not stopped by its epochs just now
                _, cell, _ = running.pop(ref)
                on_done(cell, _task_record(ray, ref, cell))
        for ref, (_, cell, submitted) in list(running.items()):
            if timeout and time.monotonic() - submitted > timeout:
                ray.cancel(ref, force=True)
                running.pop(ref)
                on_done(cell, timeout_record(cell, timeout))


def _relay_epochs(ray, channel, running: dict, on_progress: OnProgress) -> list[tuple[Any, dict[str, Any]]]:
    """Hand the drained epochs to ``on_progress``; the tasks that it stopped, with the records it gave them."""
    refs = {token: ref for ref, (token, _, _) in running.items()}
    stopped: dict[int, dict[str, Any]] = {}
    for token, epoch, loss, acc in ray.get(channel.drain.remote()):
        if token in stopped or token not in refs:
            continue  # a stopped task's later epochs, or a task already handed over
        try:
            on_progress(Progress(running[refs[token]][1], epoch, loss, acc))
        except StopCell as stop:
            stopped[token] = stop.record
    return [(refs[token], record) for token, record in stopped.items()]


def _task_record(ray, ref, cell: CellConfig) -> dict[str, Any]:
    """A finished task's record, or a failure record when its worker or node was lost."""
    try:
        return ray.get(ref)
    except Exception as error:  # lost worker or node after retries, OOM kill, cancellation
        lines = str(error).strip().splitlines()
        message = f"{type(error).__name__}: {lines[0] if lines else ''}"
        return worker_lost_record(cell, message, oom=_is_oom(error, ray))


def _capacity(ray, cells: list[CellConfig], cluster_cpus: int | None) -> int:
    """How many of these cells the cluster can run at the same time."""
    if not cells:
        return 1
    resources = ray.cluster_resources()
    if any(c.device == "cuda" for c in cells):
        gpus = int(resources.get("GPU", 0))
        if gpus == 0:
            raise ConfigError("the Ray cluster has no GPU for --device cuda")
        return gpus
    return max(1, int(resources.get("CPU", 1) // max(cell_threads(c, cluster_cpus) for c in cells)))


@dataclass
class RayExecutor(Executor):
    """Cells as Ray tasks, each in a fresh worker process."""

    timeout: float | None = None
    address: str | None = None
    retries: int = 0
    num_cpus: int | None = None

    @classmethod
    def check(cls, run: RunConfig) -> None:
        require_ray()
        check_reachable(run.ray_address)

    @classmethod
    def from_config(cls, run: RunConfig) -> RayExecutor:
        return cls(run.timeout, run.ray_address, run.retries, run.ray_cpus)

    def concurrent_cells(self, cells: list[CellConfig]) -> int | None:
        """A new local cluster runs as many cells as its CPUs hold, each asking for its torch threads; a remote
        cluster's nodes are not known here."""
        if self.address is not None:
            return None
        cpus = self.num_cpus or usable_cores()
        threads = max(cell_threads(cell, cpus) for cell in cells)
        return max(1, min(len(cells), cpus // threads))

    def with_parallel(self, parallel: int, cells: list[CellConfig]) -> RayExecutor:
        """The same executor: it runs as many of the cells it is given at once as the cluster holds."""
        return self

    def run(self, cells: list[CellConfig], on_record: OnRecord, on_progress: OnProgress) -> None:
        run_on_ray(cells, on_record, on_progress, self.address, self.retries, self.timeout, self.num_cpus)
