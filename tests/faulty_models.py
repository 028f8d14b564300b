"""Models that fail on purpose, or end their cell the way an operator or the machine would; loaded by cell
processes through RERANK_BENCH_PLUGINS=faulty_models (the ``faulty_plugin`` fixture, tests/conftest.py)."""

import os
import signal
import time
from pathlib import Path

import torch

from rerankers import mask_padding, register


class _Base(torch.nn.Module):
    def __init__(self, user_dim, item_dim):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.ones(item_dim))

    def score(self, batch):
        return mask_padding(batch.items @ self.weight, batch.mask)


@register("test-raises")
class Raises(_Base):
    def forward(self, batch):
        raise RuntimeError("injected failure")


@register("test-hangs")
class Hangs(_Base):
    def forward(self, batch):
        time.sleep(600)


@register("test-diverges")
class Diverges(_Base):
    def forward(self, batch):
        return self.score(batch) * float("nan")


@register("test-killed")
class KilledOnce(_Base):
    """Its process is killed (SIGKILL) mid-cell on the first attempt per marker directory; then it works."""

    def forward(self, batch):
        marker = Path(os.environ["FAULTY_MARKER_DIR"]) / "killed-once"
        if not marker.exists():
            marker.touch()
            os.kill(os.getpid(), signal.SIGKILL)
        return self.score(batch)


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


@register("test-nan-eval")
class NanInEval(_Base):
    """Trains fine; NaN scores in eval mode (validation, evaluation, serving)."""

    def forward(self, batch):
        scores = self.score(batch)
        return scores if self.training else scores * float("nan")


@register("test-nan-serving")
class NanServing(_Base):
    """Finite everywhere except for one request at a time in eval mode: batch-1 serving."""

    def forward(self, batch):
        scores = self.score(batch)
        return scores * float("nan") if not self.training and len(batch.items) == 1 else scores


@register("test-extra-column")
class ExtraColumn(_Base):
    """Scores of shape [B, S + 1]: a gather of the displayed items would read them without complaint."""

    def forward(self, batch):
        scores = self.score(batch)
        return torch.cat([scores, scores[:, :1]], dim=1)


@register("test-int-scores")
class IntScores(_Base):
    """Integer scores of the right shape."""

    def forward(self, batch):
        return (self.score(batch).clamp(-1e6, 1e6) * 100).long()


@register("test-exceeds-budget")
class ExceedsBudget(_Base):
    """Asks torch for as many bytes as the process's memory budget (RLIMIT_DATA) allows in all, which the process
    (already holding the interpreter and torch) cannot get under it; without a budget it scores as _Base does."""

    def forward(self, batch):
        import resource

        budget = resource.getrlimit(resource.RLIMIT_DATA)[0]
        if budget != resource.RLIM_INFINITY:
            torch.empty(budget, dtype=torch.uint8)
        return self.score(batch)
