"""FLOPs per sample (counted, and analytic for the founding models) and model FLOP utilisation.

Counting uses ``torch.utils.flop_counter.FlopCounterMode`` with the model in train mode (the fused inference
kernels of ``nn.TransformerEncoder`` are not counted by it) and one recipe on every device (``counting_recipe``):
recurrent layers as their matmuls (cuDNN off: its fused ``aten._cudnn_rnn`` has no formula and would count 0 on a
GPU) and attention through its math path (a fused CPU kernel has no formula either), so a model's count is the
same on a CPU and a GPU.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from rerankers import SlateBatch

# Dense peak FLOP/s from the vendors' data sheets (half the sheets' "with sparsity" tensor figures). The NVL parts
# (H100 NVL, H200 NVL: 400 W or less) are slower than the SXM parts (700 W) and faster than H100 PCIe.
_HOPPER_SXM = {"fp32": 67e12, "tf32": 494.7e12, "bf16": 989.4e12}
_HOPPER_NVL = {"fp32": 60e12, "tf32": 417.5e12, "bf16": 835.5e12}
DEVICE_PEAKS: dict[str, dict[str, float]] = {
    "H100 SXM": _HOPPER_SXM,
    "H100 NVL": _HOPPER_NVL,
    "H100 PCIe": {"fp32": 51e12, "tf32": 378e12, "bf16": 756e12},
    "H200 SXM": _HOPPER_SXM,
    "H200 NVL": _HOPPER_NVL,
    "GH200": _HOPPER_SXM,
    "A100": {"fp32": 19.5e12, "tf32": 156e12, "bf16": 312e12},
}
CACHE_ENV = "RERANK_BENCH_CACHE"


class _TotalOnly:
    """Stands in for FlopCounterMode's per-module tracker: only the total is needed, and the
    tracker's gradient hooks fail on modules fed views of parameters (SetRank's inducing points)."""

    parents = {"Global"}

    def __enter__(self):
        return self

    def __exit__(self, *args):
        return None


def _counter() -> FlopCounterMode:
    counter = FlopCounterMode(display=False)
    counter.mod_tracker = _TotalOnly()
    return counter


@contextlib.contextmanager
def counting_recipe():
    """The kernels every count runs through, whatever the device: cuDNN off (recurrent layers as matmuls, as on a
    CPU) and scaled-dot-product attention on its math path (matmuls, as on a CPU without a fused kernel)."""
    enabled = torch.backends.cudnn.enabled
    torch.backends.cudnn.enabled = False  # only this flag: cudnn.flags() would also reset TF32 and determinism
    try:
        with sdpa_kernel(SDPBackend.MATH):
            yield
    finally:
        torch.backends.cudnn.enabled = enabled


def count_flops(model: nn.Module, batch: SlateBatch, loss_of_scores=None) -> tuple[int | None, int]:
    """(training step FLOPs, inference forward FLOPs) for ``batch``, both in train mode, counted with
    ``counting_recipe``.

    The training count is None for a model with nothing to train.
    """
    with counting_recipe():
        return _count(model, batch, loss_of_scores)


def _count(model: nn.Module, batch: SlateBatch, loss_of_scores) -> tuple[int | None, int]:
    was_training = model.training
    model.train()
    train_flops = None
    if any(p.requires_grad for p in model.parameters()):
        counter = _counter()
        with counter:
            scores = model(batch)
            loss = loss_of_scores(scores) if loss_of_scores else scores.masked_fill(~batch.mask, 0).sum()
            loss.backward()
        train_flops = counter.get_total_flops()
        model.zero_grad(set_to_none=True)
    counter = _counter()
    with counter, torch.no_grad():
        model(batch)
    model.train(was_training)
    return train_flops, counter.get_total_flops()


def analytic_forward_flops(model: str, options: dict[str, Any], length: int, user_dim: int, item_dim: int) -> int:
    """Matmul FLOPs (2 per multiply-add) of one list's forward pass, for the founding models."""
    d = options.get("d_model", 512)
    inputs = user_dim + item_dim
    if model == "mlp":
        return 2 * length * (inputs * d + 2 * d * d + d)
    if model == "transformer":
        ff = options.get("dim_feedforward", 512)
        layers = options.get("num_layers", 2)
        per_layer = 2 * length * (3 * d * d + d * d + 2 * d * ff) + 2 * 2 * length * length * d
        return 2 * length * inputs * d + layers * per_layer + 2 * length * d
    raise KeyError(f"no analytic FLOP count for {model!r}")


def _cache_path() -> Path:
    root = Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "rerank-bench")
    return root / "peak_flops.json"


PROBE_MAX_SIZE = 2048
PROBE_STEP_SECONDS = 0.05  # grow the matrices until one product takes this long (or the largest size)
PROBE_BUDGET_SECONDS = 1.0


def _matmul_probe(dtype: torch.dtype) -> float:
    """Best FLOP/s of square matmuls, sized to this CPU's speed in this dtype.

    A fixed 2048 x 2048 product takes well under a second on a CPU with native bf16 and over 10 s on one
    without (AVX2 only: about 1 GFLOP/s in bf16), so the size doubles from 256 until one product takes
    PROBE_STEP_SECONDS, and the best of as many repeats as fit in PROBE_BUDGET_SECONDS is kept.
    """

    def seconds(a: torch.Tensor, b: torch.Tensor) -> float:
        start = time.perf_counter()
        a @ b
        return time.perf_counter() - start

    n = 256
    while True:
        a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
        a @ b  # warm-up
        took = seconds(a, b)
        if took >= PROBE_STEP_SECONDS or n >= PROBE_MAX_SIZE:
            break
        n *= 2
    best, spent = took, took
    while spent < PROBE_BUDGET_SECONDS:
        took = seconds(a, b)
        best, spent = min(best, took), spent + took
    return 2 * n**3 / best


def cpu_peak_flops(precision: str, cpu_name: str) -> float:
    """Best matmul FLOP/s of this CPU at the current thread count, measured once and cached.

    A probe taken while other work loads the CPU reads low (and MFU then high): delete the cache
    file (``$RERANK_BENCH_CACHE/peak_flops.json``, default ``~/.cache/rerank-bench``) to probe again.
    """
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    key = f"{cpu_name}|threads={torch.get_num_threads()}|{dtype}"
    path = _cache_path()
    try:
        cache = json.loads(path.read_text())
    except (OSError, ValueError):
        cache = {}
    if not isinstance(cache, dict):  # any other content is a cache to rebuild, not an error
        cache = {}
    cached = cache.get(key)
    if isinstance(cached, (int, float)) and not isinstance(cached, bool) and math.isfinite(cached) and cached > 0:
        return float(cached)
    peak = _matmul_probe(dtype)
    cache[key] = peak
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(cache, indent=1))
        tmp.replace(path)
    except OSError:
        pass  # a read-only home only costs a re-measurement
    return peak


def data_sheet_label(device_name: str) -> str | None:
    """The ``DEVICE_PEAKS`` entry of a CUDA device's name (as torch and nvidia-smi give it), None if unknown.

    The names: "NVIDIA H100 80GB HBM3" (SXM), "NVIDIA H100 PCIe", "NVIDIA H100 NVL", "NVIDIA H200",
    "NVIDIA H200 NVL", "NVIDIA GH200 480GB", "NVIDIA A100-SXM4-80GB".
    """
    name = device_name.upper()
    if "GH200" in name:
        return "GH200"
    for part in ("H200", "H100"):
        if part in name:
            if "NVL" in name:
                return f"{part} NVL"
            if "PCIE" in name:
                return f"{part} PCIe" if f"{part} PCIe" in DEVICE_PEAKS else None
            return f"{part} SXM"
    if "A100" in name:
        return "A100"
    return None


def peak_flops(device: torch.device, precision: str, device_name: str) -> tuple[float | None, str]:
    """The device's peak FLOP/s for ``precision`` and where the figure comes from (None with the reason where
    no figure is known: an unlisted device, or a MIG slice, whose share of the GPU's peak the sheets do not give)."""
    if device.type == "cpu":
        return cpu_peak_flops(precision, device_name), "CPU matmul probe (2048x2048, best of 20, cached)"
    if " MIG " in f" {device_name.upper()} ":
        return None, f"unknown peak: {device_name} is a MIG slice"
    label = data_sheet_label(device_name)
    if label is None:
        return None, f"unknown peak: no data sheet figure for {device_name}"
    return DEVICE_PEAKS[label][precision], f"data sheet: {label} {precision} dense"
