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


def timed_request(fn: Callable[[], object], device: torch.device) -> tuple[float, float | None]:
    """One call's wall seconds around a synchronisation (launch overhead and host work included) and, on CUDA,
    the device's milliseconds between two events recorded around it (the kernels' own time; None elsewhere)."""
    synchronize(device)
    events = None
    if device.type == "cuda":
        events = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start = time.perf_counter()
    if events:
        events[0].record()
    fn()
    if events:
        events[1].record()
    synchronize(device)
    wall = time.perf_counter() - start
    return wall, events[0].elapsed_time(events[1]) if events else None


def warm_up(fn: Callable[[], object], calls: int, device: torch.device) -> None:
    """``calls`` untimed calls, then a synchronisation: the first kernels, allocations and compilations happen
    here, not in a block that sizes or times anything."""
    for _ in range(calls):
        fn()
    synchronize(device)


WARMUP_CALLS = 2  # untimed calls before the calls per block are sized


def calibrate(fn: Callable[[], object], min_seconds: float, device: torch.device, limit: int = MAX_CALLS) -> int:
    """Calls per block: after ``WARMUP_CALLS`` untimed calls, doubled from 1 until a timed block lasts
    ``min_seconds`` (or ``limit`` calls). A slow first call (first CUDA kernels, a compilation) thus cannot leave
    the blocks at one call."""
    warm_up(fn, WARMUP_CALLS, device)
    calls = 1
    while timed_block(fn, calls, device) < min_seconds and calls < limit:
        calls *= 2
    return calls


@dataclass
class Subject:
    """What a cell measures: its data, the model as the registry built it (parameters, FLOPs) and the module that
    trains and serves (``runnable``: the model with the cell's precision and compile applied)."""

    workload: Any
    model: torch.nn.Module
    runnable: torch.nn.Module
    trainable: bool  # baselines (random, initial, oracle) train nothing and may have no parameter at all
    dropout_modules: int | None  # dropout modules given the cell's CPU dropout (None: the cell names none)
    attention_modules: int | None = None  # nn.MultiheadAttention modules run by rerankers.attention.Attention


def construct(cell: Any, user_dim: int, item_dim: int, utility_fn: Any = None) -> torch.nn.Module:
    """The cell's model from the registry for these feature sizes; ``utility_fn`` goes to a model that needs the
    true utilities."""
    from rerankers import build_model, get_spec

    extra = {"utility_fn": utility_fn} if getattr(get_spec(cell.model), "needs_utility", False) else {}
    return build_model(cell.model, user_dim=user_dim, item_dim=item_dim, **cell.model_kwargs, **extra)


def build_runnable(cell: Any, workload: Any, device: torch.device) -> Subject:
    """The cell's model from the registry, with the cell's CPU dropout (its dropout modules and the attention
    weights' dropout of its ``nn.MultiheadAttention`` modules, which ``rerankers.attention.Attention`` runs), on
    ``device``, with its precision and compile applied: the same for every model, plugins included."""
    from bench.accel import prepare
    from rerankers import get_spec

    spec = get_spec(cell.model)
    utility_fn = None
    if getattr(spec, "needs_utility", False):  # e.g. the oracle: give it the truth, which only synthetic data knows
        value_model = getattr(workload, "value_model", None)
        if value_model is None:
            raise ValueError(f"model {cell.model!r} needs true utilities, which this workload does not have")
        utility_fn = workload.oracle_scores  # in a world where the list matters: each slate's best order
    inputs = workload.test.inputs
    model = construct(cell, inputs.user.shape[1], inputs.items.shape[2], utility_fn)
    dropout_modules = attention_modules = None
    if getattr(cell, "cpu_dropout", None) is not None:
        from rerankers.dropout import use_cpu_dropout

        dropout_modules = use_cpu_dropout(model, cell.cpu_dropout)
        try:
            from rerankers.attention import use_attention
        except ImportError:  # a revision before the harness's attention (bench ab imports a side's rerankers)
            pass
        else:
            attention_modules = use_attention(model, cell.cpu_dropout)
    model = model.to(device)
    runnable = prepare(model, cell.precision, cell.compile)
    trainable = spec.trainable and any(p.requires_grad for p in model.parameters())
    return Subject(workload, model, runnable, trainable, dropout_modules, attention_modules)
