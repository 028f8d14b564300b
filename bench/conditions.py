"""The conditions of a measurement: how busy the machine was while a cell ran, whether a run would
oversubscribe the cores, and how much memory the machine has.

On a 2-core host a second 2-thread torch process makes a training step up to 40x slower, not 2x, so a
timing means little without knowing what else ran. Linux counts the CPU time of the whole machine in
/proc/stat and the cell's own in its rusage; the difference over the cell's wall time is what other
processes (and, as steal time, other virtual machines) took.
"""

from __future__ import annotations

import os
import resource
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# A cell is contended when other work took more than this share of the CPU time its threads could use
# (see ``contention``). Idle-machine housekeeping stays around 1-3%; one competing busy thread on a
# fully used 2-core machine is 50%.
CONTENDED_THRESHOLD = 0.10

_PROC_STAT = Path("/proc/stat")
# /proc/stat's cpu line: user nice system idle iowait irq softirq steal guest guest_nice (guest time is
# already inside user and nice). Busy is everything but idle and iowait.
_BUSY_COLUMNS = (0, 1, 2, 5, 6, 7)
_STEAL_COLUMN = 7


@dataclass(frozen=True)
class CpuCounters:
    """One reading of the counters ``contention`` compares."""

    wall_s: float  # time.monotonic()
    busy_s: float | None  # CPU-seconds the whole machine was busy, all cores, since boot (None: no /proc/stat)
    steal_s: float | None  # of which stolen by the hypervisor (None where not counted)
    own_s: float  # CPU-seconds of this process (every thread) and of its waited-for children
    cores: int  # CPUs that /proc/stat counts
    load_1min: float | None


def read_counters(proc_stat: Path = _PROC_STAT) -> CpuCounters:
    ticks = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    busy = steal = None
    cores = os.cpu_count() or 1
    try:
        lines = proc_stat.read_text().splitlines()
        values = [int(v) for v in lines[0].split()[1:]]
        busy = sum(values[i] for i in _BUSY_COLUMNS if i < len(values)) / ticks
        steal = values[_STEAL_COLUMN] / ticks if len(values) > _STEAL_COLUMN else None
        cores = sum(1 for line in lines if line.startswith("cpu") and line[3:4].isdigit()) or cores
    except (OSError, ValueError, IndexError):
        pass
    own = 0.0
    for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
        usage = resource.getrusage(who)
        own += usage.ru_utime + usage.ru_stime
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    return CpuCounters(time.monotonic(), busy, steal, own, cores, load)


def contention(before: CpuCounters, after: CpuCounters, cell_threads: int) -> dict[str, Any]:
    """What other work took from the machine between two readings, for a cell running ``cell_threads``
    compute threads.

    - ``other_cpu_seconds``: machine busy time minus the cell's own (steal included: a stolen tick is
      capacity the cell could not use);
    - ``other_cpu_fraction``: that over wall time x cores;
    - ``contention``: the share of the cell's threads' CPU time that other work took, assuming it used
      the idle cores first: (others' average busy cores - cores the cell leaves free) / cell threads,
      clipped to [0, 1];
    - ``contended``: contention above ``CONTENDED_THRESHOLD``.
    Fields are None where the machine does not count them (no /proc/stat).
    """
    wall = max(after.wall_s - before.wall_s, 1e-9)
    threads = max(1, min(cell_threads, after.cores))
    out: dict[str, Any] = {
        "wall_seconds": wall,
        "cores": after.cores,
        "cell_threads": cell_threads,
        "cell_cpu_seconds": after.own_s - before.own_s,
        "load_1min_before": before.load_1min,
        "load_1min_after": after.load_1min,
        "steal_seconds": None,
        "other_cpu_seconds": None,
        "other_cpu_fraction": None,
        "contention": None,
        "contended": None,
        "contended_threshold": CONTENDED_THRESHOLD,
    }
    if before.busy_s is None or after.busy_s is None:
        return out
    if before.steal_s is not None and after.steal_s is not None:
        out["steal_seconds"] = after.steal_s - before.steal_s
    other = max(0.0, (after.busy_s - before.busy_s) - (after.own_s - before.own_s))
    spare_cores = max(0, after.cores - threads)
    share = min(1.0, max(0.0, other / wall - spare_cores) / threads)
    out.update(
        other_cpu_seconds=other,
        other_cpu_fraction=other / (wall * after.cores),
        contention=share,
        contended=share > CONTENDED_THRESHOLD,
    )
    return out


def usable_cores() -> int:
    """CPUs this process may run on (its affinity), else the machine's count."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def physical_memory_bytes() -> int | None:
    """The machine's memory (None where the system does not say)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def default_torch_threads() -> int:
    """The intra-op threads a fresh torch process uses when a cell sets none (threads = 0):
    OMP_NUM_THREADS if set, else torch's default (the physical cores, which can be fewer than logical)."""
    value = os.environ.get("OMP_NUM_THREADS", "")
    if value.isdigit() and int(value) > 0:
        return int(value)
    import torch

    return torch.get_num_threads()


def oversubscription(threads_per_cell: int, concurrent_cells: int, cores: int | None = None) -> str | None:
    """Why running ``concurrent_cells`` cells at once, each with ``threads_per_cell`` torch threads (0:
    torch's default), would oversubscribe ``cores`` (default: the cores this process may use); None
    when it would not. Executors call it before starting: more compute threads than cores make every
    timing of the run meaningless (threads then wait for each other, and slow each other down far
    more than in proportion)."""
    cores = cores or usable_cores()
    threads = threads_per_cell or default_torch_threads()
    demand = threads * concurrent_cells
    if demand <= cores:
        return None
    return (
        f"{concurrent_cells} concurrent cell(s) x {threads} torch thread(s) = {demand} compute threads on "
        f"{cores} core(s): timings would measure the threads waiting for each other "
        f"(use --threads {max(1, cores // concurrent_cells)} or fewer concurrent cells)"
    )


# Models that swapped in the bulk-bits dropout themselves before the harness chose it for every model.
_BULK_BEFORE_SETTING = ("transformer", "prm", "setrank")


def recorded_cpu_dropout(record: dict[str, Any]) -> str:
    """The CPU dropout a record's training used: its ``environment.cpu_dropout``, or, for records made
    before that setting existed, what the model chose itself then: ``bulk`` for transformer, prm and
    setrank on CPUs where torch's Bernoulli is serial (all but Intel), ``torch`` for every other model.
    The bulk kernel only ran in fp32 training on CPU; elsewhere the answer is ``torch`` either way."""
    env = record.get("environment") or {}
    if "cpu_dropout" in env:
        return env["cpu_dropout"]
    intel = "intel" in str(env.get("cpu", "")).lower()
    if record.get("model") in _BULK_BEFORE_SETTING and env.get("device") == "cpu" and not intel:
        return "bulk"
    return "torch"
