"""A learned embedding of each item's initial rank, added to its input (PRM, SetRank_init)."""

from __future__ import annotations

import torch
from torch import nn

from rerankers.batch import SlateBatch


class RankEmbedding(nn.Embedding):
    """``RankEmbedding(max_positions, dim)``: one learned vector per initial rank; ranks beyond
    ``max_positions - 1`` share the last one, and padded items take rank 0's (their outputs are masked anyway).

    The ranks that no slate ever displays are trained only through attention, never by their own item's loss,
    so a model using it scores undisplayed candidates meaninglessly (``scores_undisplayed_meaningfully=False``).
    """

    def forward(self, batch: SlateBatch) -> torch.Tensor:  # type: ignore[override]
        """[B, L, dim]: the embedding of each item's initial rank."""
        ranks = batch.positions.clamp(0, self.num_embeddings - 1).masked_fill(~batch.mask, 0)
        return super().forward(ranks)
