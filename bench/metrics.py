"""Ranking metrics. Every function takes scores where padded items are -inf.

Definitions (docs/metrics.md has the long form):
- slate_acc: the model's top displayed item is the clicked one (the founding code's).
- total_acc: the model's top item over the whole candidate list is the clicked one.
- ndcg@k: NDCG of the displayed slate ordered by the model's scores, with linear gain
  equal to the item's true utility minus the lowest true utility in its slate (so the
  worst displayed item has gain 0), discount 1/log2(rank + 1); a slate whose items all
  have equal utility (no gain to earn) scores 0, as in scikit-learn and TF-Ranking.
- mrr: mean of 1 / rank of the clicked item within the slate, rank = 1 + number of
  displayed items scored strictly higher (ties resolved in the item's favour).
"""

from __future__ import annotations

import torch


def slate_hits(slate_scores: torch.Tensor, clicks: torch.Tensor) -> torch.Tensor:
    """[N] bool: the highest-scored displayed item is the clicked one."""
    return slate_scores.argmax(dim=1) == clicks.argmax(dim=1)


def total_hits(scores: torch.Tensor, slate: torch.Tensor, clicks: torch.Tensor) -> torch.Tensor:
    """[N] bool: the highest-scored candidate overall is the clicked one."""
    clicked_candidate = slate.gather(1, clicks.argmax(dim=1, keepdim=True)).squeeze(1)
    return scores.argmax(dim=1) == clicked_candidate


def reciprocal_rank(slate_scores: torch.Tensor, clicks: torch.Tensor) -> torch.Tensor:
    """[N] float: 1 / rank of the clicked item among the displayed ones."""
    clicked_score = slate_scores.gather(1, clicks.argmax(dim=1, keepdim=True))
    rank = 1 + (slate_scores > clicked_score).sum(dim=1)
    return 1.0 / rank.to(torch.float64)


def dcg_at_k(ordered_gains: torch.Tensor, k: int) -> torch.Tensor:
    top = ordered_gains[:, :k].to(torch.float64)
    discounts = 1.0 / torch.log2(torch.arange(2, top.shape[1] + 2, device=top.device, dtype=torch.float64))
    return (top * discounts).sum(dim=1)


def ndcg_at_k(scores: torch.Tensor, gains: torch.Tensor, k: int) -> torch.Tensor:
    """[N] NDCG@k of ``scores`` against non-negative ``gains`` (0 where no gain exists).

    Items with -inf score (padding) must carry gain 0. Ties in ``scores`` are broken
    by list position (stable sort).
    """
    order = scores.argsort(dim=1, descending=True, stable=True)
    dcg = dcg_at_k(gains.gather(1, order), k)
    ideal = dcg_at_k(gains.sort(dim=1, descending=True).values, k)
    return torch.where(ideal > 0, dcg / ideal.clamp_min(torch.finfo(torch.float64).tiny), 0.0)


def utility_gains(slate_utility: torch.Tensor) -> torch.Tensor:
    """Linear gains from true utilities: utility minus the slate's lowest utility."""
    return slate_utility - slate_utility.min(dim=1, keepdim=True).values
