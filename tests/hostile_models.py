"""Models that end their cell in ways an operator or the machine would, for tests/test_hostile_input.py.

Loaded by cell processes through RERANK_BENCH_PLUGINS=hostile_models.
"""

import os
import signal

import torch

from rerankers import mask_padding, register

NAMES = ("test-self-kill", "test-alloc-fails")


class _Base(torch.nn.Module):
    def __init__(self, user_dim, item_dim):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.ones(item_dim))

    def score(self, batch):
        return mask_padding(batch.items @ self.weight, batch.mask)


@register("test-self-kill")
class SelfKill(_Base):
    """Its process gets SIGKILL mid-cell, as from `kill -9` by an operator (no memory pressure at all)."""

    def forward(self, batch):
        os.kill(os.getpid(), signal.SIGKILL)


@register("test-alloc-fails")
class AllocFails(_Base):
    """An allocation fails with the CPU allocator's message."""

    def forward(self, batch):
        raise RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory")
