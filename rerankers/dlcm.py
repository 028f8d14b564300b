"""DLCM: Deep Listwise Context Model (Ai et al., SIGIR 2018)."""

from __future__ import annotations

import torch
from torch import nn

from rerankers.batch import SlateBatch, mask_padding, reading_order, user_item_features
from rerankers.registry import register


# Capped so that the costliest point (d 64, 2 GRU layers) trains at most ~2x the default cell's FLOPs per sample
# (d 96 with 1 layer: 2.25x, d 128: 4x): docs/tuning.md.
@register("dlcm", search_space={"d_model": [32, 48, 64], "num_layers": [1, 2], "heads": [1, 3, 5]})
class DLCM(nn.Module):
    """DLCM (Ai et al. 2018): a GRU reads the initial list in reverse; a local ranking function scores.

    1. Input representation, as the authors' code builds it: the raw user + item features,
       concatenated with their expansion through two ELU layers (widths ``d_model // 2`` and
       ``d_model`` minus the raw width), so the GRU's input is ``d_model`` wide; when the raw
       features are at least ``d_model`` wide there is no expansion and the GRU reads them alone.
    2. Encoding: a GRU (``num_layers`` deep, hidden ``d_model``) reads each list's real items from
       the lowest-ranked to the top-ranked one (the paper's reverse order, so the top items weigh
       most on the final state). Padding is read after the real items and never reaches them;
       the final state ``s`` is the output at the list's top item, whatever the list's length.
    3. Local ranking function, with ``o_i`` the GRU output at item i and ``heads`` = the paper's
       alpha: ``score_i = sum_a v_a * <o_i, tanh(W_a s + b_a)>``.

    Reads the list in its initial order, so it is not permutation-equivariant (permuting the
    storage order of items together with their ranks changes nothing). Cost per list: L
    sequential GRU steps, O(L d^2), plus O(L heads d) for the scores.
    """

    def __init__(
        self,
        user_dim: int,
        item_dim: int,
        d_model: int = 64,
        num_layers: int = 1,
        heads: int = 3,
    ) -> None:
        super().__init__()
        self.d_model, self.heads = d_model, heads
        raw = user_dim + item_dim
        expanded = max(d_model - raw, 0)
        middle = max(d_model // 2, 1)
        self.expand = (
            nn.Sequential(nn.Linear(raw, middle), nn.ELU(), nn.Linear(middle, expanded), nn.ELU()) if expanded else None
        )
        self.gru = nn.GRU(raw + expanded, d_model, num_layers, batch_first=True)
        self.context = nn.Linear(d_model, heads * d_model)  # W_a, b_a for every head
        self.combine = nn.Linear(heads, 1, bias=False)  # v

    def forward(self, batch: SlateBatch) -> torch.Tensor:
        rows, length = batch.mask.shape
        features = user_item_features(batch)
        if self.expand is not None:
            features = torch.cat((features, self.expand(features)), dim=-1)
        order = reading_order(batch, reverse=True).unsqueeze(-1)
        read, _ = self.gru(features.gather(1, order.expand_as(features)))
        last = (batch.mask.sum(dim=1) - 1).clamp_min(0)
        final = read[torch.arange(rows, device=read.device), last]  # [B, d], state after the top item
        outputs = torch.empty_like(read).scatter_(1, order.expand_as(read), read)  # back to the input's slots
        context = torch.tanh(self.context(final)).view(rows, self.heads, self.d_model)
        scores = self.combine(torch.einsum("bld,bhd->blh", outputs, context)).squeeze(-1)
        return mask_padding(scores, batch.mask)
