"""Speed and memory measurement: warm-up first, synchronised timing blocks kept as samples, memory per phase."""

from __future__ import annotations

import resource
import sys
import threading
from pathlib import Path

import numpy as np
import torch
from torch import nn

from bench.config import MeasureConfig
from bench.scores import checked
from bench.subject import WARMUP_REQUESTS, calibrate, timed_block, timed_request
from rerankers import SlateBatch

MIB = 1024 * 1024


class ServingSampler:
    """The serving measurements, taken in ``bursts`` bursts spread over the cell's life:
    ``config.throughput_blocks`` timed blocks of eval-mode forward passes at ``batch``'s size (samples/s per
    block, one synchronisation around each) and ``config.latency_requests`` batch-1 requests from
    ``requests``, each synchronised (milliseconds).

    A cell calls ``burst()`` after each training epoch and ``finish()`` after training: on a shared machine
    the speed of the same forward pass moves between levels over seconds (seen on the reference VM),
    so blocks or requests taken in one fraction of a second see one level, and their interval would not
    cover the next cell's. Spread over the whole training, the samples see what the machine did during
    the cell. The model's eval-mode forward pass does not depend on its weights' values, so it costs the
    same at every epoch. Each burst starts untimed (the first burst by two warm-up calls, then growing the calls per
    block until one lasts ``min_block_seconds``, later ones by one call; up to 3 requests), draws no random number and
    leaves the model in the mode it found it in. The untimed warm-up calls' outputs are checked (shape, dtype,
    finite: bench/scores.py), so that a model that serves NaN fails its cell.
    """

    WARMUP_REQUESTS = WARMUP_REQUESTS

    def __init__(
        self, model: nn.Module, batch: SlateBatch, requests: SlateBatch, config: MeasureConfig, bursts: int = 1
    ) -> None:
        self.model, self.batch, self.requests, self.config = model, batch, requests, config
        blocks = np.array_split(np.arange(config.throughput_blocks), max(1, bursts))
        requests = np.array_split(np.arange(config.latency_requests), max(1, bursts))
        self.shares = [(len(b), list(r)) for b, r in zip(blocks, requests, strict=True)]  # one per burst
        self.segments: dict[str, list[int]] = {"infer_samples_per_s": [], "latency_b1_ms": []}  # samples per burst
        self.calls_per_block: int | None = None
        self.throughput: list[float] = []
        self.latency_ms: list[float] = []
        self.latency_cuda_ms: list[float] = []  # on CUDA: each request's device time between two events
        self.bursts = 0  # bursts that timed at least one block or request

    @torch.inference_mode()
    def burst(self) -> None:
        """Time the next share of the blocks and requests (nothing once every share is taken)."""
        if not self.shares:
            return
        blocks, requests = self.shares.pop(0)
        if not blocks and not requests:
            return
        was_training = self.model.training
        self.model.eval()
        self._blocks(blocks)
        self._requests(requests)
        self.segments["infer_samples_per_s"].append(blocks)
        self.segments["latency_b1_ms"].append(len(requests))
        self.bursts += 1
        self.model.train(was_training)

    def _blocks(self, count: int) -> None:
        if not count:
            return
        device = self.batch.items.device
        forward = lambda: self.model(self.batch)  # noqa: E731
        checked(forward(), self.batch.mask, "serving")  # untimed warm-up call, its output read (bench/scores.py)
        if self.calls_per_block is None:  # warm-up calls, then the calls per block grown
            self.calls_per_block = calibrate(forward, self.config.min_block_seconds, device)
        size = len(self.batch) * self.calls_per_block
        self.throughput += [size / timed_block(forward, self.calls_per_block, device) for _ in range(count)]

    def _requests(self, indices: list[int]) -> None:
        device, total = self.requests.items.device, len(self.requests)
        for i in indices[: self.WARMUP_REQUESTS]:  # untimed, their outputs read (bench/scores.py)
            one = self.requests[i % total : i % total + 1]
            checked(self.model(one), one.mask, "serving (batch 1)")
        for i in indices:
            one = self.requests[i % total : i % total + 1]
            wall, device_ms = timed_request(lambda one=one: self.model(one), device)
            self.latency_ms.append(wall * 1000)
            if device_ms is not None:
                self.latency_cuda_ms.append(device_ms)

    def finish(self) -> tuple[list[float], list[float]]:
        """Take every share not taken yet (a cell that trains nothing takes them all here); returns the
        samples/s of the blocks and the milliseconds of the requests."""
        while self.shares:
            self.burst()
        return self.throughput, self.latency_ms


def cuda_phase_start(device: torch.device) -> float | None:
    """On CUDA, the start of a memory phase: the caching allocator's unused blocks released (so the reserved
    peak is the phase's own, not an earlier phase's or cell's), the peaks reset, and the memory allocated now
    returned in MiB (the phase's baseline: the data and model, and whatever the phase inherits). None elsewhere."""
    if device.type != "cuda":
        return None
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats(device)
    return torch.cuda.memory_allocated(device) / MIB


def peak_memory_mib(device: torch.device, phase: str, baseline_mib: float | None = None) -> dict[str, float]:
    """CUDA: the phase's peaks since ``cuda_phase_start`` (allocated and reserved) and the allocated peak net of
    the phase's baseline (``baseline_mib``). Nothing elsewhere (the CPU's phases are measured by
    ``CpuPhasePeak``)."""
    if device.type != "cuda":
        return {}
    allocated = torch.cuda.max_memory_allocated(device) / MIB
    out = {
        f"cuda_peak_allocated_{phase}_mib": allocated,
        f"cuda_peak_reserved_{phase}_mib": torch.cuda.max_memory_reserved(device) / MIB,
    }
    if baseline_mib is not None:
        out[f"cuda_net_peak_allocated_{phase}_mib"] = allocated - baseline_mib
    return out


def cpu_peak_rss_mib() -> float:
    """The process's peak resident set size over its life (resets of the kernel's mark included)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return max(peak / 1024 if sys.platform != "darwin" else peak / MIB, _peak_before_resets_mib)


_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")
SAMPLE_INTERVAL_S = 0.001  # the fallback sampler's period
_peak_before_resets_mib = 0.0  # the highest peak-RSS mark seen before a reset


def _status_kib(field: str) -> int | None:
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return None


def cpu_rss_mib() -> float | None:
    """The process's resident set size now (Linux; None elsewhere)."""
    kib = _status_kib("VmRSS")
    return kib / 1024 if kib is not None else None


def reset_rss_peak() -> bool:
    """Reset the kernel's peak-RSS mark (VmHWM) to the current RSS: writing 5 to /proc/self/clear_refs
    (Linux >= 4.0). False where that is not possible (other systems, some sandboxes).

    The reset also resets getrusage's ru_maxrss, so the mark is kept first for ``cpu_peak_rss_mib``.
    """
    global _peak_before_resets_mib
    before = _status_kib("VmHWM")
    if before is None:
        return False
    _peak_before_resets_mib = max(_peak_before_resets_mib, before / 1024)
    try:
        _CLEAR_REFS.write_text("5")
    except OSError:
        return False
    return True


class CpuPhasePeak:
    """Peak RSS of one phase (``with CpuPhasePeak() as phase: ...; phase.peak_mib``).

    Exact where the kernel's peak mark can be reset (Linux): the mark is reset on entry and read on
    exit, so the peak is the kernel's own, page for page. Elsewhere RSS is sampled every millisecond
    by a thread, as optimum-benchmark's memory tracker samples it from a process: a peak shorter than
    the period can be missed, and the sampler takes the GIL now and then. ``method`` says which ran.
    """

    def __init__(self, force_sampling: bool = False) -> None:
        self.force_sampling = force_sampling
        self.method: str | None = None
        self.peak_mib: float | None = None
        self._stop = threading.Event()
        self._sampler: threading.Thread | None = None
        self._sampled_peak = 0.0

    def __enter__(self) -> CpuPhasePeak:
        if not self.force_sampling and reset_rss_peak():
            self.method = "hwm-reset"
        elif cpu_rss_mib() is not None:
            self.method = "sampled"
            self._sampled_peak = cpu_rss_mib() or 0.0
            self._sampler = threading.Thread(target=self._sample, daemon=True)
            self._sampler.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(SAMPLE_INTERVAL_S):
            self._sampled_peak = max(self._sampled_peak, cpu_rss_mib() or 0.0)

    def __exit__(self, *exc_info: object) -> None:
        if self.method == "hwm-reset":
            kib = _status_kib("VmHWM")
            self.peak_mib = kib / 1024 if kib is not None else None
        elif self._sampler is not None:
            self._stop.set()
            self._sampler.join()
            self.peak_mib = max(self._sampled_peak, cpu_rss_mib() or 0.0)


def phase_memory_mib(phase: CpuPhasePeak, name: str, baseline_mib: float | None) -> dict[str, float]:
    """A phase's absolute peak RSS and its increase over the process's baseline (memory after imports)."""
    if phase.peak_mib is None:
        return {}
    out = {f"cpu_peak_rss_{name}_mib": phase.peak_mib}
    if baseline_mib is not None:
        out[f"cpu_net_peak_rss_{name}_mib"] = phase.peak_mib - baseline_mib
    return out


def parameter_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
