"""A model that can be made slower on purpose, for tests of speed comparisons; loaded by cell processes
through RERANK_BENCH_PLUGINS=speed_models.

``test-slowable`` is a pointwise MLP of five equal hidden blocks. Its option ``slow`` runs one of the
blocks twice and averages the two (equal) results, so the scores and the training are unchanged while
the forward and backward passes do about 20% more work. ``slow`` left unset reads the environment
variable SLOWABLE_SLOW (1: slow): that stands for a code change, which slows a model without changing
its cell key, so the runs before and after compare cell by cell.
"""

import os

import torch
from torch import nn

from rerankers import mask_padding, register, user_item_features

SLOW_ENV = "SLOWABLE_SLOW"
HIDDEN_BLOCKS = 5


@register("test-slowable", permutation_equivariant=True)
class Slowable(nn.Module):
    """Pointwise MLP of five hidden blocks; slow=True runs one of them twice (~20% more work)."""

    def __init__(self, user_dim: int, item_dim: int, d_model: int = 64, slow: bool | None = None) -> None:
        super().__init__()
        self.slow = os.environ.get(SLOW_ENV) == "1" if slow is None else slow
        self.embed = nn.Linear(user_dim + item_dim, d_model)
        self.blocks = nn.ModuleList(nn.Sequential(nn.Linear(d_model, d_model), nn.ReLU()) for _ in range(HIDDEN_BLOCKS))
        self.out = nn.Linear(d_model, 1)

    def forward(self, batch) -> torch.Tensor:
        hidden = self.embed(user_item_features(batch))
        for index, block in enumerate(self.blocks):
            if self.slow and index == 0:
                hidden = (block(hidden) + block(hidden)) * 0.5  # x + x is exact, so this equals block(hidden)
            else:
                hidden = block(hidden)
        return mask_padding(self.out(hidden).squeeze(-1), batch.mask)
