"""A cell's memory budget (``--memory-limit``): applied to the cell's process while it runs, recorded with it.

On CPU the budget is the soft RLIMIT_DATA of the process: the kernel refuses any private writable mapping (the heap,
torch's tensors, thread stacks) beyond it, so an allocation past the budget fails in the cell itself (torch's
"can't allocate memory", numpy's or Python's MemoryError) and the cell ends as an ``oom`` record with that message as
its evidence. The limit counts the whole process, the interpreter and torch included (their share at the start is
recorded as ``data_at_start_mib``), as a machine with that much memory would. On CUDA the budget caps what torch's
caching allocator may take (``torch.cuda.set_per_process_memory_fraction``), whose refusal is a
``torch.OutOfMemoryError``. Without a limit the budget is the machine's physical memory, enforced by nothing but the
kernel (an OOM kill is recorded as ``oom`` by the executor, with the kernel's counter as evidence).
"""

from __future__ import annotations

import contextlib
import os
import resource
from collections.abc import Iterator
from typing import Any

import torch

from bench.config import memory_bytes

MIB = 1024**2


def physical_memory_bytes() -> int | None:
    """The machine's physical memory (None where the system does not say)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def data_size_mib() -> float | None:
    """The process's private writable memory as RLIMIT_DATA counts it (VmData), in MiB; None without /proc."""
    try:
        for line in open("/proc/self/status", encoding="ascii"):
            if line.startswith("VmData:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


@contextlib.contextmanager
def memory_budget(limit: str | None, device: torch.device) -> Iterator[dict[str, Any]]:
    """Apply the cell's budget while the block runs and restore the process's own limit after it (an inline cell
    shares the driver's process); yields what the record keeps of it."""
    if limit is None:
        total = physical_memory_bytes()
        yield {"memory_limit_bytes": total, "memory_limit_method": "none: the machine's physical memory"}
        return
    budget = memory_bytes(limit)
    if device.type == "cuda":
        total = torch.cuda.get_device_properties(device).total_memory
        torch.cuda.set_per_process_memory_fraction(min(1.0, budget / total), device)
        try:
            yield {"memory_limit_bytes": budget, "memory_limit_method": "torch.cuda.set_per_process_memory_fraction"}
        finally:
            torch.cuda.set_per_process_memory_fraction(1.0, device)
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_DATA)
    applied = budget if hard == resource.RLIM_INFINITY else min(budget, hard)
    at_start = data_size_mib()
    resource.setrlimit(resource.RLIMIT_DATA, (applied, hard))
    try:
        yield {"memory_limit_bytes": applied, "memory_limit_method": "RLIMIT_DATA", "data_at_start_mib": at_start}
    finally:
        resource.setrlimit(resource.RLIMIT_DATA, (soft, hard))
