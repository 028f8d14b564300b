"""The two re-rankers of the founding experiment (PRM blog re-implementation)."""

from __future__ import annotations

import torch
from torch import nn

from rerankers.batch import SlateBatch, mask_padding, user_item_features
from rerankers.registry import register


@register(
    "transformer",
    permutation_equivariant=True,
    # Capped so that its costliest point (d 96, 2 layers, ff 256) trains at most ~2x the default cell's FLOPs per
    # sample (1.74x; d 128 would be 2.64x, a third layer 2.61x): docs/tuning.md.
    search_space={
        "d_model": [32, 64, 96],
        "num_layers": [1, 2],
        "dim_feedforward": [128, 256],
        "nhead": [1, 2, 4],
        "dropout": (0.0, 0.3),
    },
)
class TransformerReranker(nn.Module):
    """Transformer encoder over user+item features (the founding experiment's model)."""

    def __init__(
        self,
        user_dim: int,
        item_dim: int,
        d_model: int = 512,
        nhead: int = 2,
        dim_feedforward: int = 512,
        num_layers: int = 2,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        self.embed = nn.Sequential(nn.Linear(user_dim + item_dim, d_model), nn.ReLU())
        layer = nn.TransformerEncoderLayer(
            d_model, nhead, dim_feedforward, dropout, activation="relu", batch_first=True
        )
        # Nested tensors would only pay off for heavily padded lists and make the
        # eval-time output layout differ from training's.
        self.encoder = nn.TransformerEncoder(layer, num_layers, norm=nn.LayerNorm(d_model), enable_nested_tensor=False)
        self.score = nn.Sequential(nn.ReLU(), nn.Linear(d_model, 1))

    def forward(self, batch: SlateBatch) -> torch.Tensor:
        hidden = self.embed(user_item_features(batch))
        hidden = self.encoder(hidden, src_key_padding_mask=~batch.mask)
        return mask_padding(self.score(hidden).squeeze(-1), batch.mask)


# d_model capped at 88: 1.85x the default cell's training FLOPs per sample (128: 3.8x), docs/tuning.md.
@register("mlp", permutation_equivariant=True, search_space={"d_model": [32, 64, 88]})
class MLPReranker(nn.Module):
    """Pointwise MLP with 3 hidden layers; scores each item without seeing the list."""

    def __init__(self, user_dim: int, item_dim: int, d_model: int = 512) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(user_dim + item_dim, d_model),
            nn.ReLU(),
            nn.Linear(d_model, d_model),
            nn.ReLU(),
            nn.Linear(d_model, d_model),
            nn.ReLU(),
            nn.Linear(d_model, 1),
        )

    def forward(self, batch: SlateBatch) -> torch.Tensor:
        return mask_padding(self.net(user_item_features(batch)).squeeze(-1), batch.mask)
