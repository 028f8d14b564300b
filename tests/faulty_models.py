"""Models that fail on purpose, loaded by cell processes through RERANK_BENCH_PLUGINS=faulty_models."""

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
