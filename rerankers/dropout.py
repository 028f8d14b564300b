"""Dropout whose CPU training masks are cut from bulk random bits, and the harness's choice between it and torch's.

Torch draws a CPU dropout mask one Mersenne-Twister number per element, serially, except where it uses MKL's
parallel Bernoulli: builds with MKL on Intel CPUs, before torch 2.7 (pytorch PR 146174 turned that path off in
public builds "until https://github.com/pytorch/pytorch/issues/132395 is addressed"). Serial masks were about a
third of the founding transformer's training step on a 2-core AMD EPYC and 40% on a 2-core Intel Xeon with torch
2.13 and MKL (where one and two threads draw them equally fast). Filling 64-bit words with random bits is several
times cheaper per element, and each word gives four 16-bit lanes, so the mask costs a fraction as much. The drop
probability is then a multiple of 1/65536 (0.1 becomes 6554/65536 = 0.100006); survivors are scaled by the inverse
keep probability, so a layer's expected output is unchanged, exactly as with ``nn.Dropout``.

Only float32 tensors on CPU in training mode take the bit path: other devices and dtypes keep torch's own dropout,
and eval mode is the identity.
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


def bulk_dropout(x: torch.Tensor, p: float) -> torch.Tensor:
    """``x`` with elements dropped with probability p (a multiple of 1/65536) and survivors scaled: the mask cut
    from bulk random bits, whatever device or dtype (the caller decides where that pays)."""
    drops = lane_drop_count(p)
    lanes = _random_words((x.numel() + 3) // 4, x.device).view(torch.int16)[: x.numel()].view(x.shape)
    # lane - (threshold - 1) is >= 1 for a kept element and <= 0 for a dropped one, so the
    # clamp gives exactly 1 or 0 (bool -> float conversion is the slow way to get there).
    threshold = _LANE_MIN + drops
    mask = lanes.to(x.dtype).sub_(threshold - 1).clamp_(0.0, 1.0).mul_(LANES / (LANES - drops))
    return x * mask


_WORDS: dict[torch.device, torch.Tensor] = {}  # one buffer of random words per device, grown as needed


def _random_words(count: int, device: torch.device) -> torch.Tensor:
    """``count`` 64-bit words of fresh random bits, in a buffer kept between calls: eager autograd saves the mask,
    never the words, which are read once, into the mask, before the next mask is drawn (and allocating megabytes
    anew at every call costs page faults). A compiled graph may save the words instead and recompute the mask in
    the backward pass, so there each call has its own."""
    if _compiling():
        return torch.empty(count, dtype=torch.int64, device=device).random_(-(1 << 63), None)
    buffer = _WORDS.get(device)
    if buffer is None or buffer.numel() < count:
        buffer = _WORDS[device] = torch.empty(count, dtype=torch.int64, device=device)
    return buffer[:count].random_(-(1 << 63), None)


def _compiling() -> bool:
    compiler = getattr(torch, "compiler", None)
    return bool(compiler is not None and hasattr(compiler, "is_compiling") and compiler.is_compiling())


def takes_bits(x: torch.Tensor) -> bool:
    """Whether the bulk kernel draws ``x``'s mask: float32 on CPU (a bf16 mask could not hold the lane values)."""
    return x.device.type == "cpu" and x.dtype == torch.float32


class Dropout(nn.Dropout):
    """``nn.Dropout`` with masks cut from bulk random bits for float32 CPU tensors; same interface and state."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p in (0.0, 1.0) or self.inplace or not takes_bits(x):
            return super().forward(x)
        return bulk_dropout(x, self.p)


@functools.cache
def torch_bernoulli_is_serial() -> bool:
    """Whether this torch draws CPU Bernoulli masks one element at a time: always from torch 2.7 on (public
    builds), before that unless built with MKL and on an Intel CPU."""
    parallel_path = torch.backends.mkl.is_available() and "intel" in _cpu_vendor().lower()
    return not parallel_path or _torch_version() >= (2, 7)


def _torch_version() -> tuple[int, int]:
    major, minor = torch.__version__.split(".")[:2]
    return int(major), int("".join(c for c in minor if c.isdigit()) or 0)


def _cpu_vendor() -> str:
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("vendor_id"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


CPU_DROPOUTS = {
    "auto": "bulk where torch's own CPU masks are drawn serially, else torch",
    "torch": "stock PyTorch nn.Dropout",
    "bulk": "masks cut from bulk random bits",
}


def resolved_cpu_dropout(kind: str) -> str:
    """The implementation a setting stands for on this machine: ``auto`` is ``bulk`` where torch's CPU Bernoulli
    is serial, else ``torch``."""
    if kind not in CPU_DROPOUTS:
        raise ValueError(f"unknown CPU dropout {kind!r} (known: {', '.join(CPU_DROPOUTS)})")
    if kind == "auto":
        return "bulk" if torch_bernoulli_is_serial() else "torch"
    return kind


def use_cpu_dropout(module: nn.Module, kind: str) -> int:
    """Make every dropout module inside ``module`` the implementation ``kind`` stands for, with its p kept.

    The harness calls it on every model it builds (plugins included), so that all models train with
    the same dropout; a model never chooses. Returns how many dropout modules the model has.
    Dropout called as a function (``F.dropout``) is not a module and stays torch's; attention-weight dropout
    follows the setting where the harness's attention runs the model's attention modules (bench/fast_attention.py).
    """
    wanted = Dropout if resolved_cpu_dropout(kind) == "bulk" else nn.Dropout
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
    return "bulk-bits" if resolved_cpu_dropout(kind) == "bulk" else "torch"
