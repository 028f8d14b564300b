"""What a cell measures and the timing pieces every measurement shares: the cell's model as built from the
registry (``build_runnable``), and timed blocks of calls with one synchronisation around each.

`bench ab`'s processes (bench/fixed_work.py) load this file by its path from the driver's tree, so that the
timing is the same for both sides whatever revision ``bench`` is in them; so it imports nothing from ``bench``
at module level.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

MAX_CALLS = 4096  # the most calls (steps, forward passes) a calibrated block may take
WARMUP_REQUESTS = 3


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed_block(fn: Callable[[], object], iterations: int, device: torch.device) -> float:
    """Seconds of ``iterations`` calls of ``fn``, with one synchronisation before and after (never per call)."""
    synchronize(device)
    start = time.perf_counter()
    for _ in range(iterations):
        fn()
    synchronize(device)
    return time.perf_counter() - start


def calibrate(fn: Callable[[], object], min_seconds: float, device: torch.device, limit: int = MAX_CALLS) -> int:
    """Calls per block: doubled from 1 until a timed block lasts ``min_seconds`` (or ``limit`` calls). The
    blocks it times are the warm-up too."""
    calls = 1
    while timed_block(fn, calls, device) < min_seconds and calls < limit:
        calls *= 2
    return calls


@dataclass
class Subject:
    """What a cell measures: its data, the model as built and the module it trains and runs (``runnable``:
    the model with the cell's precision and compile applied)."""

    workload: Any
    model: torch.nn.Module
    runnable: torch.nn.Module
    trainable: bool
    dropout_modules: int | None


def build_runnable(cell: Any, workload: Any, device: torch.device) -> Subject:
    """The cell's model from the registry, with the cell's CPU dropout, on ``device``, with its precision and
    compile applied: the same for every model, plugins included."""
    from bench.accel import prepare
    from rerankers import build_model, get_spec

    spec = get_spec(cell.model)
    extra = {}
    if getattr(spec, "needs_utility", False):  # e.g. the oracle: give it the truth, which only synthetic data knows
        value_model = getattr(workload, "value_model", None)
        if value_model is None:
            raise ValueError(f"model {cell.model!r} needs true utilities, which this workload does not have")
        extra["utility_fn"] = value_model.score
    model = build_model(
        cell.model,
        user_dim=workload.test.inputs.user.shape[1],
        item_dim=workload.test.inputs.items.shape[2],
        **cell.model_kwargs,
        **extra,
    )
    dropout_modules = None
    if getattr(cell, "cpu_dropout", None) is not None:
        from rerankers.dropout import use_cpu_dropout

        dropout_modules = use_cpu_dropout(model, cell.cpu_dropout)
    model = model.to(device)
    runnable = prepare(model, cell.precision, cell.compile)
    trainable = spec.trainable and any(p.requires_grad for p in model.parameters())
    return Subject(workload, model, runnable, trainable, dropout_modules)
