"""Dropout whose CPU training masks are cut from bulk random bits.

Where torch does not use MKL's parallel Bernoulli (it does only on Intel CPUs, in builds with
MKL), it draws a dropout mask one Mersenne-Twister number per element, serially: on a 2-core AMD EPYC that is
about a third of the founding transformer's training step. Filling 64-bit words with random
bits is several times cheaper per element, and each word gives four 16-bit lanes, so the
mask costs a fraction as much. The drop probability is then a multiple of 1/65536 (0.1 becomes
6554/65536 = 0.100006); survivors are scaled by the inverse keep probability, so a layer's
expected output is unchanged, exactly as with ``nn.Dropout``.

Intel CPUs with MKL and other devices keep torch's own dropout (parallel there); eval mode is the
identity.
"""

from __future__ import annotations

import functools
import platform

import torch
from torch import nn

LANES = 1 << 16  # values of one 16-bit lane
_LANE_MIN = -(1 << 15)


def lane_drop_count(p: float) -> int:
    """How many of a lane's 65536 values drop an element: p rounded to a multiple of 1/65536."""
    return round(p * LANES)


class Dropout(nn.Dropout):
    """``nn.Dropout`` with a cheaper mask on CPU; same module interface and state."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p in (0.0, 1.0) or self.inplace or not _bits_are_cheaper(x):
            return super().forward(x)
        drops = lane_drop_count(self.p)
        words = torch.empty((x.numel() + 3) // 4, dtype=torch.int64, device=x.device)
        lanes = words.random_(-(1 << 63), None).view(torch.int16)[: x.numel()].view(x.shape)
        # lane - (threshold - 1) is >= 1 for a kept element and <= 0 for a dropped one, so the
        # clamp gives exactly 1 or 0 (bool -> float conversion is the slow way to get there).
        threshold = _LANE_MIN + drops
        mask = lanes.to(torch.float32).sub_(threshold - 1).clamp_(0.0, 1.0).mul_(LANES / (LANES - drops))
        return x * mask


def _bits_are_cheaper(x: torch.Tensor) -> bool:
    # float32 only: a bf16 mask could not hold the lane values exactly.
    return x.device.type == "cpu" and x.dtype == torch.float32 and torch_bernoulli_is_serial()


@functools.cache
def torch_bernoulli_is_serial() -> bool:
    """Whether torch draws CPU Bernoulli masks one element at a time: unless built with MKL and on Intel."""
    return not (torch.backends.mkl.is_available() and "intel" in _cpu_vendor().lower())


def _cpu_vendor() -> str:
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("vendor_id"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


CPU_DROPOUTS = ("torch", "bulk")  # torch: nn.Dropout as stock PyTorch has it; bulk: ``Dropout`` above


def use_cpu_dropout(module: nn.Module, kind: str) -> int:
    """Make every dropout module inside ``module`` the ``kind`` implementation, with its p kept.

    The harness calls it on every model it builds (plugins included), so that all models train with
    the same dropout; a model never chooses. Returns how many dropout modules the model has.
    Dropout called as a function (``F.dropout``, attention-weight dropout inside
    ``nn.MultiheadAttention``) is not a module and stays torch's.
    """
    if kind not in CPU_DROPOUTS:
        raise ValueError(f"unknown CPU dropout {kind!r} (known: {', '.join(CPU_DROPOUTS)})")
    wanted = Dropout if kind == "bulk" else nn.Dropout
    count = 0
    for parent in module.modules():
        for name, child in parent.named_children():
            if type(child) in (nn.Dropout, Dropout):
                count += 1
                if type(child) is not wanted:
                    setattr(parent, name, wanted(child.p, child.inplace))
    return count


def cpu_dropout_kernel(kind: str) -> str:
    """What actually draws fp32 CPU training masks under the setting ``kind`` on this machine."""
    return "bulk-bits" if kind == "bulk" and torch_bernoulli_is_serial() else "torch"
