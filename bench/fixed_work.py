"""Fixed work on one cell, timed: what each process of `bench ab` runs, and the timing pieces cells share.

`bench ab` runs this file as a script in every side's process (``python -P bench/fixed_work.py RESULT < JOB``;
``-P`` keeps this file's folder off sys.path) with ``PYTHONPATH`` starting at that side's tree. Every ``bench`` or
``rerankers`` import inside the functions below is then the side's code: its option checks and cells, data
generation, registry and models, CPU dropout, precision and compile, optimiser, loss and training step, FLOP
counter. The timing around that code is this file's, the same for both sides: the instrument stays, the
subject changes. So nothing from ``bench`` is imported at module level: the timing pieces come from the
driver's bench/subject.py, loaded by its path, and the side's own ``bench.subject.build_runnable`` (how its cells
build their model) is preferred where the side has one.

Modes (``job["mode"]``):

- ``plan``: the side's cells for the settings (model, key, config); nothing is built or trained;
- ``time``: warm-up, then ``train_blocks`` timed blocks of ``steps_per_block`` training steps,
  ``throughput_blocks`` blocks of ``calls_per_block`` eval-mode forward passes at the cell's batch size and
  ``latency_requests`` batch-1 requests, each timed with one synchronisation (CUDA) at its end. Steps and calls
  per block, when the job does not fix them, are calibrated here by doubling until a block lasts the cell's
  ``min_block_seconds`` (the driver then fixes them for every later process of the cell, as pyperf calibrates
  its loops once). Also the parameters and the FLOPs per sample;
- ``instructions``: under valgrind's callgrind (started with ``--instr-atstart=no``), the instructions of
  ``instruction_steps`` training steps and of ``instruction_requests`` batch-1 requests, each counted between
  client requests after an uncounted warm-up; callgrind writes them to its output files, which the driver reads.
"""

from __future__ import annotations

import ctypes
import importlib.abc
import importlib.machinery
import importlib.util
import inspect
import itertools
import json
import mmap
import platform
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch


def _driver_subject() -> Any:
    """bench/subject.py of the tree this file is in (the driver's), whatever ``bench`` is in this process."""
    name = "_fixed_work_subject"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, Path(__file__).with_name("subject.py"))
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # dataclasses look their module up while the class is made
        spec.loader.exec_module(module)
    return sys.modules[name]


instrument = _driver_subject()
synchronize, timed_block, calibrate = instrument.synchronize, instrument.timed_block, instrument.calibrate
Subject, WARMUP_REQUESTS = instrument.Subject, instrument.WARMUP_REQUESTS

# --- The side's process -----------------------------------------------------------------------------------------


def side_cells(settings: dict[str, Any]) -> list[Any]:
    """The side's cells for ``settings``, checked and built by the side's own code."""
    from bench.sweep import build_cells

    try:
        from bench.options import check_settings
    except ImportError:  # a revision before option declarations: the driver's check is the only one
        return build_cells(settings)
    if "command_line" in inspect.signature(check_settings).parameters:  # a revision before bench/declare.py
        return build_cells(check_settings(settings, "this side's options", command_line=True))
    return build_cells(check_settings(settings))


def side_subject(cell: Any) -> Any:
    """The cell's data and model, built as the side builds them (its own ``build_runnable`` where it has one)."""
    try:
        from bench.workloads import load_workload
    except ImportError:  # a revision with synthetic data only
        from bench.data import generate as load_workload
    try:
        from bench.subject import build_runnable as build
    except ImportError:  # a revision before bench ab: its cells built the model as the driver's function does
        build = instrument.build_runnable
    device = torch.device(cell.device)
    if cell.threads:
        torch.set_num_threads(cell.threads)
    torch.manual_seed(cell.seed)
    return build(cell, load_workload(cell.workload, cell.seed, device), device)


def training_step(subject: Subject, cell: Any) -> tuple[Callable[[], object], int]:
    """One training step of the side's loop per call (cycling over the training batches), and its samples."""
    from bench.losses import get_loss
    from bench.train import make_optimizer, train_step

    batches = list(subject.workload.train.batches(cell.workload.batch_size))
    optimizer = make_optimizer(subject.runnable, cell.train)
    loss_fn = get_loss(cell.train.loss)
    counter = itertools.count()
    subject.runnable.train()
    return lambda: train_step(subject.runnable, batches[next(counter) % len(batches)], optimizer, loss_fn), len(
        batches[0]
    )


def time_training(subject: Subject, cell: Any, job: dict[str, Any], device: torch.device) -> dict[str, Any]:
    step, samples = training_step(subject, cell)
    for _ in range(max(1, cell.train.warmup_steps)):
        step()
    steps = job.get("steps_per_block") or calibrate(step, cell.measure.min_block_seconds, device)
    rates = [steps * samples / timed_block(step, steps, device) for _ in range(job["train_blocks"])]
    return {"train_samples_per_s": rates, "steps_per_block": steps}


@torch.inference_mode()
def time_serving(subject: Subject, cell: Any, job: dict[str, Any], device: torch.device) -> dict[str, Any]:
    """Blocks of eval-mode forward passes at the cell's batch size (samples/s), then batch-1 requests (ms)."""
    runnable = subject.runnable
    runnable.eval()
    batch = subject.workload.test[: cell.workload.batch_size].inputs
    forward = lambda: runnable(batch)  # noqa: E731
    forward()
    calls = job.get("calls_per_block") or calibrate(forward, cell.measure.min_block_seconds, device)
    rates = [calls * len(batch) / timed_block(forward, calls, device) for _ in range(cell.measure.throughput_blocks)]
    requests, latency_ms = subject.workload.test.inputs, []
    one_request = [requests[i % len(requests) : i % len(requests) + 1] for i in range(cell.measure.latency_requests)]
    for request in one_request[:WARMUP_REQUESTS]:
        runnable(request)
    for request in one_request:
        latency_ms.append(timed_block(lambda request=request: runnable(request), 1, device) * 1000)
    return {"infer_samples_per_s": rates, "latency_b1_ms": latency_ms, "calls_per_block": calls}


def deterministic(subject: Subject, cell: Any) -> dict[str, Any]:
    """Parameters and FLOPs per sample (the side's counter, where it has one): equal work gives equal counts."""
    out: dict[str, Any] = {"parameters": sum(p.numel() for p in subject.model.parameters())}
    try:
        from bench.flops import count_flops
        from bench.losses import get_loss
    except ImportError:
        return out
    batch = subject.workload.test[: cell.workload.batch_size]
    loss = get_loss(cell.train.loss)

    def training_loss(scores: torch.Tensor) -> torch.Tensor:
        return loss(scores.gather(1, batch.slate), batch.labels, batch.slate_mask)

    train_flops, infer_flops = count_flops(subject.model, batch.inputs, training_loss)
    out["infer_flops_per_sample"] = infer_flops / len(batch)
    if subject.trainable and train_flops is not None:
        out["train_flops_per_sample"] = train_flops / len(batch)
    return out


def run_plan(job: dict[str, Any]) -> dict[str, Any]:
    cells = side_cells(job["settings"])
    return {"cells": [{"model": c.model, "key": c.key(), "config": c.to_dict()} for c in cells]}


def run_timed(job: dict[str, Any]) -> dict[str, Any]:
    cell = side_cells(job["settings"])[job["cell"]]
    subject = side_subject(cell)
    device = torch.device(cell.device)
    out: dict[str, Any] = {"cell_key": cell.key(), "torch_threads": torch.get_num_threads()}
    if subject.trainable:
        out.update(time_training(subject, cell, job, device))
    out.update(time_serving(subject, cell, job, device))
    out["deterministic"] = deterministic(subject, cell)
    out["dropout_modules"] = subject.dropout_modules
    out["attention_modules"] = getattr(subject, "attention_modules", None)  # a side's Subject may predate it
    if device.type == "cuda":
        out["device_name"] = torch.cuda.get_device_name(device)
    return out


# --- Instruction counts under callgrind ---------------------------------------------------------------------------

# A function in machine code that makes a valgrind client request (x86-64): the pointer to the request's six
# words goes to rax, the default answer 0 to rdx, then valgrind's marker (rdi rotated by 3, 13, 61 and 51 bits:
# 128 in all, so it changes nothing natively) and `xchg rbx, rbx`; valgrind answers in rdx. Natively it
# returns 0. Python cannot issue the marker itself, and a compiled helper would need a C compiler.
_CLIENT_REQUEST_X86_64 = bytes.fromhex(
    "4889f8"  # mov rax, rdi
    "31d2"  # xor edx, edx
    "48c1c703"
    "48c1c70d"
    "48c1c73d"
    "48c1c733"  # rol rdi, 3 / 13 / 61 / 51
    "4887db"  # xchg rbx, rbx
    "4889d0"  # mov rax, rdx
    "c3"  # ret
)
RUNNING_ON_VALGRIND = 0x1001
_CALLGRIND = (ord("C") << 24) | (ord("T") << 16)  # VG_USERREQ_TOOL_BASE('C', 'T')
CALLGRIND_DUMP_STATS_AT, CALLGRIND_ZERO_STATS = _CALLGRIND + 3, _CALLGRIND + 1
CALLGRIND_START_INSTRUMENTATION, CALLGRIND_STOP_INSTRUMENTATION = _CALLGRIND + 4, _CALLGRIND + 5


class ClientRequests:
    """Valgrind client requests from Python (x86-64 Linux)."""

    def __init__(self) -> None:
        if platform.machine() not in ("x86_64", "AMD64") or not sys.platform.startswith("linux"):
            raise RuntimeError(f"instruction counts need x86-64 Linux, not {platform.machine()} {sys.platform}")
        self._page = mmap.mmap(-1, mmap.PAGESIZE, prot=mmap.PROT_READ | mmap.PROT_WRITE)
        self._page.write(_CLIENT_REQUEST_X86_64)
        address = ctypes.addressof(ctypes.c_char.from_buffer(self._page))
        libc = ctypes.CDLL(None, use_errno=True)
        libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
        if libc.mprotect(address, mmap.PAGESIZE, mmap.PROT_READ | mmap.PROT_EXEC) != 0:
            raise OSError(ctypes.get_errno(), "cannot make the client-request page executable")
        self._call = ctypes.CFUNCTYPE(ctypes.c_uint64, ctypes.c_void_p)(address)

    def __call__(self, request: int, argument: int = 0) -> int:
        words = (ctypes.c_uint64 * 6)(request, argument, 0, 0, 0, 0)
        return int(self._call(ctypes.addressof(words)))

    def count(self, name: str, fn: Callable[[], object], device: torch.device) -> None:
        """Count the instructions of ``fn`` alone, written to callgrind's output as the dump ``name``."""
        label = ctypes.create_string_buffer(name.encode())
        self(CALLGRIND_ZERO_STATS)
        self(CALLGRIND_START_INSTRUMENTATION)
        fn()
        synchronize(device)
        self(CALLGRIND_STOP_INSTRUMENTATION)
        self(CALLGRIND_DUMP_STATS_AT, ctypes.addressof(label))


def run_instructions(job: dict[str, Any]) -> dict[str, Any]:
    requests = ClientRequests()
    if not requests(RUNNING_ON_VALGRIND):
        raise RuntimeError("instruction mode runs under valgrind (bench ab starts it so)")
    cell = side_cells(job["settings"])[job["cell"]]
    subject = side_subject(cell)
    torch.set_num_threads(1)  # one thread whatever the cell asks: valgrind runs threads one at a time anyway
    device = torch.device(cell.device)
    counted = {}
    if subject.trainable:
        step, _ = training_step(subject, cell)
        for _ in range(2):
            step()
        requests.count("train", lambda: [step() for _ in range(job["instruction_steps"])], device)
        counted["train"] = job["instruction_steps"]
    with torch.inference_mode():
        subject.runnable.eval()
        inputs = subject.workload.test.inputs
        one = [inputs[i % len(inputs) : i % len(inputs) + 1] for i in range(job["instruction_requests"])]
        for request in one[:WARMUP_REQUESTS]:
            subject.runnable(request)
        requests.count("latency", lambda: [subject.runnable(request) for request in one], device)
    counted["latency"] = job["instruction_requests"]
    return {"cell_key": cell.key(), "counted": counted}


MODES = {"plan": run_plan, "time": run_timed, "instructions": run_instructions}


class _SideTreeOnly(importlib.abc.MetaPathFinder):
    """Finds the side's ``bench.*`` and ``rerankers.*`` modules in the side's tree only. Without it, a module
    that a revision lacks would be found by the editable install's finder (which points at the driver's tree)
    and mix the driver's code into the side's."""

    PACKAGES = ("bench", "rerankers")

    def find_spec(self, name: str, path: Any, target: Any = None) -> Any:
        if name.partition(".")[0] not in self.PACKAGES or "." not in name:
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is None:
            raise ModuleNotFoundError(f"No module named {name!r} in this side's tree", name=name)
        return spec


def main(argv: list[str]) -> int:
    """Read the job from stdin, run it, write the result (``status`` ok or failed, with the error) as JSON."""
    result: dict[str, Any]
    sys.meta_path.insert(0, _SideTreeOnly())
    try:
        job = json.loads(sys.stdin.read())
        import bench

        result = {"bench_path": str(Path(bench.__file__).resolve().parent), "torch": torch.__version__}
        result.update(MODES[job["mode"]](job), status="ok", error=None)
    except Exception as error:  # noqa: BLE001 - whatever the side's code raises is the side's failure, reported
        traceback.print_exc()
        result = {"status": "failed", "error": "".join(traceback.format_exception_only(type(error), error)).strip()}
    Path(argv[1]).write_text(json.dumps(result))
    return 0 if result["status"] == "ok" else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
