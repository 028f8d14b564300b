"""SetRank: permutation-equivariant ranking with induced self-attention (Pang et al., SIGIR 2020)."""

from __future__ import annotations

import functools

import torch
from torch import nn

from rerankers.batch import SlateBatch, mask_padding, user_item_features
from rerankers.rank_embedding import RankEmbedding
from rerankers.registry import register


class MultiheadAttentionBlock(nn.Module):
    """MAB(Q, K) = LN(H + rFF(H)), H = LN(Q + MultiHead(Q, K, K)); padded keys are masked out."""

    def __init__(self, d_model: int, nhead: int, dim_feedforward: int, dropout: float) -> None:
        super().__init__()
        self.attention = nn.MultiheadAttention(d_model, nhead, dropout=dropout, batch_first=True)
        self.feedforward = nn.Sequential(
            nn.Linear(d_model, dim_feedforward), nn.ReLU(), nn.Dropout(dropout), nn.Linear(dim_feedforward, d_model)
        )
        self.norm1, self.norm2 = nn.LayerNorm(d_model), nn.LayerNorm(d_model)
        self.dropout = nn.Dropout(dropout)

    def forward(self, query: torch.Tensor, keys: torch.Tensor, key_padding: torch.Tensor | None) -> torch.Tensor:
        attended, _ = self.attention(query, keys, keys, key_padding_mask=key_padding, need_weights=False)
        hidden = self.norm1(query + self.dropout(attended))
        return self.norm2(hidden + self.dropout(self.feedforward(hidden)))


class InducedSetAttentionBlock(nn.Module):
    """IMSAB_m(X) = MAB(X, MAB(I, X)): m learned inducing points attend to the items, items attend back."""

    def __init__(self, d_model: int, nhead: int, dim_feedforward: int, inducing: int, dropout: float) -> None:
        super().__init__()
        self.inducing = nn.Parameter(torch.randn(inducing, d_model) / d_model**0.5)
        self.gather = MultiheadAttentionBlock(d_model, nhead, dim_feedforward, dropout)
        self.scatter = MultiheadAttentionBlock(d_model, nhead, dim_feedforward, dropout)

    def forward(self, items: torch.Tensor, padding: torch.Tensor) -> torch.Tensor:
        points = self.inducing.unsqueeze(0).expand(items.shape[0], -1, -1)
        summary = self.gather(points, items, padding)  # [B, m, d]: only real items are read
        return self.scatter(items, summary, None)  # [B, L, d]


# Capped below the authors' sizes (6 blocks, 8 heads, 20 inducing points at d_model 256) so that the costliest
# point (d 64, 2 blocks, 8 points, ff 256) trains at most ~2x the default cell's FLOPs per sample (1.99x; 20 points
# at d 96: 2.9x): docs/tuning.md.
SEARCH_SPACE = {
    "d_model": [32, 48, 64],
    "num_blocks": [1, 2],
    "nhead": [1, 2, 4, 8],
    "inducing": [4, 8],
    "dim_feedforward": [128, 256],
    "dropout": (0.0, 0.3),
}
REDUCED = "reduced sizes: 1 block, 2 heads, 8 inducing points (authors: 6 blocks, 8 heads, 20 points, d 256)"


@register(
    "setrank",
    permutation_equivariant=True,
    search_space=SEARCH_SPACE,
    description=f"SetRank (Pang et al. 2020): induced self-attention blocks over the item set; {REDUCED}",
)
class SetRank(nn.Module):
    """SetRank (Pang et al. 2020): stacked induced multi-head self-attention blocks over the item set.

    User + item features are embedded by a linear layer to ``d_model``; ``num_blocks`` induced
    blocks (IMSAB) follow: ``inducing`` learned points attend to the list's real items
    (multi-head attention + feed-forward, residuals, layer norm), then every item attends to
    those points; a linear layer scores each item. Permutation-equivariant, since nothing
    depends on the items' order, unless ``rank_embedding=True`` adds a learned embedding of each
    item's initial rank to its input (the paper's ordinal-embedding variant). Cost per list and
    block: O(L m d) attention + O((L + m) d dim_feedforward), linear in L where full
    self-attention is quadratic; a block costs about two transformer layers, so the default is
    one block (the default profile's CPU time budget). Sizes are reduced from the authors' run
    (6 blocks, 8 heads, 20 inducing points at d_model 256).
    """

    def __init__(
        self,
        user_dim: int,
        item_dim: int,
        d_model: int = 64,
        nhead: int = 2,
        dim_feedforward: int = 256,
        num_blocks: int = 1,
        inducing: int = 8,
        dropout: float = 0.1,
        rank_embedding: bool = False,
        max_positions: int = 256,
    ) -> None:
        super().__init__()
        self.embed = nn.Linear(user_dim + item_dim, d_model)
        self.rank = RankEmbedding(max_positions, d_model) if rank_embedding else None
        self.blocks = nn.ModuleList(
            InducedSetAttentionBlock(d_model, nhead, dim_feedforward, inducing, dropout) for _ in range(num_blocks)
        )
        self.score = nn.Linear(d_model, 1)

    def forward(self, batch: SlateBatch) -> torch.Tensor:
        hidden = self.embed(user_item_features(batch))
        if self.rank is not None:
            hidden = hidden + self.rank(batch)
        for block in self.blocks:
            hidden = block(hidden, ~batch.mask)
        return mask_padding(self.score(hidden).squeeze(-1), batch.mask)


# The paper's SetRank_init: the same model with the ordinal embedding of the initial rank on,
# registered under its own name so that records and reports tell the two apart.
register(
    "setrank-init",
    scores_undisplayed_meaningfully=False,
    search_space=SEARCH_SPACE,
    description=f"SetRank_init (Pang et al. 2020): SetRank + a learned embedding of the initial rank; {REDUCED}",
)(functools.partial(SetRank, rank_embedding=True))
