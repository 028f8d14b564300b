"""An example rerank-bench plugin: one small list-aware re-ranker, registered on import."""

import torch
from torch import nn

from rerankers import SlateBatch, mask_padding, masked_mean, register, user_item_features


@register("example-linear", permutation_equivariant=True)
class ExampleLinear(nn.Module):
    """Example plugin: a linear score of each item's features and of the list's mean item."""

    def __init__(self, user_dim: int, item_dim: int, d_model: int = 16) -> None:
        super().__init__()
        features = user_dim + item_dim
        self.net = nn.Sequential(nn.Linear(2 * features, d_model), nn.ReLU(), nn.Linear(d_model, 1))

    def forward(self, batch: SlateBatch) -> torch.Tensor:
        inputs = user_item_features(batch)
        context = masked_mean(inputs, batch.mask).unsqueeze(1).expand_as(inputs)
        scores = self.net(torch.cat((inputs, context), dim=-1)).squeeze(-1)
        return mask_padding(scores, batch.mask)
