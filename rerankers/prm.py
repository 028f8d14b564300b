"""PRM: Personalized Re-ranking for Recommendation (Pei et al., RecSys 2019)."""

from __future__ import annotations

import torch
from torch import nn

from rerankers.batch import SlateBatch, mask_padding
from rerankers.rank_embedding import RankEmbedding
from rerankers.registry import register


@register(
    "prm",
    scores_undisplayed_meaningfully=False,
    # The references use 1 to 4 blocks; capped so that the costliest point (d 96, 2 layers, ff 256, pv 32) trains
    # at most ~2x the default cell's FLOPs per sample (1.75x; d 128: 2.66x, 4 layers at d 64: 1.99x): docs/tuning.md.
    search_space={
        "d_model": [32, 64, 96],
        "num_layers": [1, 2],
        "nhead": [1, 2, 4],
        "dim_feedforward": [128, 256],
        "pv_dim": [8, 16, 32],
        "dropout": (0.0, 0.3),
    },
)
class PRM(nn.Module):
    """PRM (Pei et al. 2019): items + personalized vector + initial-rank embedding, transformer encoder.

    As the paper describes it: each item's input is its feature vector concatenated with a
    personalized vector ``pv``; a
    learned embedding of the item's initial rank is added to that input; a linear layer maps it
    to ``d_model``; ``num_layers`` transformer encoder blocks (multi-head self-attention over
    the list + feed-forward, residuals, layer norm, dropout) let every item see every other;
    a linear layer and a softmax over the list give the scores. The scores returned are the
    log of that softmax (same order, and the training loss is unchanged by the per-list shift).

    The personalized vector differs from the paper's: here it is one vector per user, the user's
    features through a learned linear projection of size ``pv_dim`` trained jointly, so every
    item of a list gets the same pv; the paper takes a per-(user, item) vector from a
    pre-trained click model, which would need a pre-training stage and item ids.

    ``position_embedding=False`` is the paper's ablation without the rank embedding: the model
    is then permutation-equivariant. Ranks beyond ``max_positions - 1`` share the last embedding.
    The embeddings of ranks that are never displayed are trained only through attention, never
    by their own item's loss, so the scores of undisplayed candidates are not meaningful (the
    registration says so). Cost per list and block: O(L^2 d) attention + O(L d dim_feedforward),
    like a layer of the founding transformer; two blocks by default, the founding
    transformer's depth (the references use 1 to 4).
    """

    def __init__(
        self,
        user_dim: int,
        item_dim: int,
        d_model: int = 64,
        nhead: int = 2,
        dim_feedforward: int = 256,
        num_layers: int = 2,
        pv_dim: int = 16,
        dropout: float = 0.1,
        position_embedding: bool = True,
        max_positions: int = 256,
    ) -> None:
        super().__init__()
        input_dim = item_dim + pv_dim
        self.personalize = nn.Linear(user_dim, pv_dim)
        self.position = RankEmbedding(max_positions, input_dim) if position_embedding else None
        self.project = nn.Linear(input_dim, d_model)
        layer = nn.TransformerEncoderLayer(
            d_model, nhead, dim_feedforward, dropout, activation="relu", batch_first=True
        )
        self.encoder = nn.TransformerEncoder(layer, num_layers, enable_nested_tensor=False)
        self.output = nn.Linear(d_model, 1)

    def forward(self, batch: SlateBatch) -> torch.Tensor:
        length = batch.items.shape[1]
        pv = self.personalize(batch.user).unsqueeze(1).expand(-1, length, -1)
        inputs = torch.cat((batch.items, pv), dim=-1)
        if self.position is not None:
            inputs = inputs + self.position(batch)
        hidden = self.encoder(self.project(inputs), src_key_padding_mask=~batch.mask)
        logits = mask_padding(self.output(hidden).squeeze(-1), batch.mask)
        return mask_padding(torch.log_softmax(logits, dim=1), batch.mask)
