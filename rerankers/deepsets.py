"""DeepSets re-ranker: each item next to a pooled summary of its list (Zaheer et al. 2017 style)."""

from __future__ import annotations

import torch
from torch import nn

from rerankers.batch import SlateBatch, mask_padding, masked_mean, user_item_features
from rerankers.registry import register

POOLINGS = ("mean", "max", "mean+max")


@register(
    "deepsets",
    permutation_equivariant=True,
    # d_model capped at 88: 1.84x the default cell's training FLOPs per sample (128: 3.8x), docs/tuning.md.
    search_space={"d_model": [32, 64, 88], "pooling": list(POOLINGS)},
)
class DeepSets(nn.Module):
    """DeepSets: item features + a pooled summary of the whole list through an MLP; the cheapest list-aware model.

    phi (2 ReLU layers of width ``d_model``) embeds every user + item vector; the list's
    summary pools phi over the real items (``pooling``: mean, max, or both concatenated); rho
    (2 ReLU layers of width ``d_model`` + a linear output) scores each item from its own user + item
    features and the summary. Permutation-equivariant; padded items never enter the pool.
    Cost per list: O(L d^2), one pass, no attention.
    """

    def __init__(self, user_dim: int, item_dim: int, d_model: int = 64, pooling: str = "mean+max") -> None:
        super().__init__()
        if pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {', '.join(POOLINGS)}, got {pooling!r}")
        self.pooling = pooling
        features = user_dim + item_dim
        self.phi = nn.Sequential(nn.Linear(features, d_model), nn.ReLU(), nn.Linear(d_model, d_model), nn.ReLU())
        summary = d_model * (2 if pooling == "mean+max" else 1)
        self.rho = nn.Sequential(
            nn.Linear(features + summary, d_model),
            nn.ReLU(),
            nn.Linear(d_model, d_model),
            nn.ReLU(),
            nn.Linear(d_model, 1),
        )

    def forward(self, batch: SlateBatch) -> torch.Tensor:
        inputs = user_item_features(batch)
        embedded = self.phi(inputs)
        pooled = []
        if "mean" in self.pooling:
            pooled.append(masked_mean(embedded, batch.mask))
        if "max" in self.pooling:
            largest = embedded.masked_fill(~batch.mask.unsqueeze(-1), float("-inf")).amax(dim=1)
            pooled.append(torch.where(batch.mask.any(dim=1, keepdim=True), largest, 0.0))
        summary = torch.cat(pooled, dim=-1).unsqueeze(1).expand(-1, inputs.shape[1], -1)
        scores = self.rho(torch.cat((inputs, summary), dim=-1)).squeeze(-1)
        return mask_padding(scores, batch.mask)
