"""Exact fp32 for computations that must not lose precision to the harness's speed settings."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch


@contextlib.contextmanager
def exact_fp32(device_type: str) -> Iterator[None]:
    """Plain fp32 inside, whatever the caller set: bf16 autocast off and TF32 matmuls and convolutions off
    (restored on exit). For scores whose near-ties must break as they did where the truth was computed (the
    oracle's utilities) and for metrics. Setting the flags is host-side bookkeeping: no synchronisation."""
    matmul, cudnn = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        with torch.autocast(device_type=device_type, enabled=False):
            yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = matmul, cudnn
