"""Speed and memory measurement: warm-up first, medians and percentiles, synchronised blocks."""

from __future__ import annotations

import resource
import statistics
import sys
import time
from collections.abc import Callable

import torch
from torch import nn

from bench.config import MeasureConfig
from bench.train import synchronize
from rerankers import SlateBatch


def percentile(values: list[float], q: float) -> float:
    """Linear-interpolated percentile, q in [0, 100]."""
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def _timed_block(fn: Callable[[], object], iterations: int, device: torch.device) -> float:
    synchronize(device)
    start = time.perf_counter()
    for _ in range(iterations):
        fn()
    synchronize(device)
    return time.perf_counter() - start


@torch.inference_mode()
def inference_throughput(model: nn.Module, batch: SlateBatch, config: MeasureConfig) -> float:
    """Median samples/s of eval-mode forward passes at ``batch``'s size.

    Each block runs enough calls to last ``min_block_seconds`` and is timed with one
    synchronisation around it, not one per call.
    """
    device = batch.items.device
    model.eval()
    forward = lambda: model(batch)  # noqa: E731
    iterations = 1
    while _timed_block(forward, iterations, device) < config.min_block_seconds and iterations < 4096:
        iterations *= 2  # also serves as warm-up
    rates = [
        len(batch) * iterations / _timed_block(forward, iterations, device) for _ in range(config.throughput_blocks)
    ]
    return statistics.median(rates)


@torch.inference_mode()
def single_request_latency_ms(model: nn.Module, requests: SlateBatch, config: MeasureConfig) -> dict[str, float]:
    """p50/p95/p99 of one eval-mode forward pass at batch size 1 (an online request)."""
    device = requests.items.device
    model.eval()
    count = config.latency_requests
    for i in range(min(10, count)):  # warm-up
        model(requests[i : i + 1])
    samples = []
    for i in range(count):
        one = requests[i % len(requests) : i % len(requests) + 1]
        samples.append(_timed_block(lambda one=one: model(one), 1, device) * 1000)
    return {
        "latency_b1_p50_ms": percentile(samples, 50),
        "latency_b1_p95_ms": percentile(samples, 95),
        "latency_b1_p99_ms": percentile(samples, 99),
    }


def reset_peak_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory_mib(device: torch.device, phase: str) -> dict[str, float]:
    """Peak memory since the last reset (CUDA) or over the process's life (CPU RSS)."""
    mib = 1024 * 1024
    if device.type == "cuda":
        return {
            f"cuda_peak_allocated_{phase}_mib": torch.cuda.max_memory_allocated(device) / mib,
            f"cuda_peak_reserved_{phase}_mib": torch.cuda.max_memory_reserved(device) / mib,
        }
    return {}


def cpu_peak_rss_mib() -> float:
    """The process's peak resident set size; per cell only when each cell has its own process."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 1024 if sys.platform != "darwin" else peak / (1024 * 1024)


def parameter_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
