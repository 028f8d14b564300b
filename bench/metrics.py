"""Ranking metrics over the displayed slate, per slate (the mean is taken by the caller).

Every function takes the model's scores (padded items may be -inf) and an optional
``mask`` (True = real displayed item; ``None``: every item not scored -inf is real).
``labels`` are the slate's labels: clicks (0/1, any number per slate) or graded relevance.
An item is *relevant* when its label is > 0. docs/workloads.md has the long form.

- slate_acc (``slate_hits``): the model's top displayed item carries the slate's highest
  label (the clicked item under the founding one-click rule).
- total_acc (``total_hits``): the model's top item over the whole candidate list is a
  displayed item carrying the slate's highest label.
- mrr (``reciprocal_rank``): 1 / rank of the best-ranked relevant item in the model's order.
- ndcg@k (``ndcg_at_k``): linear gain (gain = label, as ``sklearn.metrics.ndcg_score``),
  discount 1 / log2(rank + 1), normalised by the ideal DCG@k.
- map@k (``average_precision_at_k``): sum over the top k of precision@i at each relevant
  item, divided by min(number of relevant items, k), so a perfect ranking scores 1.
- precision@k (``precision_at_k``): relevant items among the top k, divided by
  min(k, number of displayed items).
- regret: true utility of the best displayed item minus that of the model's top displayed
  item (synthetic data: the hidden utility; LETOR: the relevance grade). Always >= 0.

One tie rule for every metric: items with equal scores are ordered by display position (the item
shown higher wins the tie), so a ranking is always one definite order, as in trec_eval (which breaks
ties by document id). A model that scores every item alike is judged as the displayed order.
(sklearn's ``ndcg_score`` and ``average_precision_score`` average over tied orders instead, so they
differ from these values where scores tie.)

No-relevant convention: a slate without a relevant item scores 0 on every label-based
metric above (as scikit-learn and TF-Ranking do for NDCG). ``bench.cell.evaluate`` leaves
such slates out of the label-based means (there is no ranking to judge) and reports how
many slates were judged.
"""

from __future__ import annotations

import torch

NEG_INF = float("-inf")


def _real(scores: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    return scores != NEG_INF if mask is None else mask.bool()


def relevant(labels: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """[N, T] bool: real items with a label > 0."""
    return (labels > 0) & mask


def judged(labels: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """[N] bool: slates with at least one relevant displayed item."""
    mask = torch.ones_like(labels, dtype=torch.bool) if mask is None else mask.bool()
    return relevant(labels, mask).any(dim=1)


def ranked(scores: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Item indices best first; padding last; ties by slate position."""
    return scores.masked_fill(~mask, NEG_INF).argsort(dim=1, descending=True, stable=True)


def slate_hits(slate_scores: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """[N] bool: the highest-scored displayed item carries the slate's highest label (> 0)."""
    mask = _real(slate_scores, mask)
    top = slate_scores.masked_fill(~mask, NEG_INF).argmax(dim=1, keepdim=True)
    best = labels.masked_fill(~mask, NEG_INF).amax(dim=1)
    return (labels.gather(1, top).squeeze(1) == best) & (best > 0)


def total_hits(
    scores: torch.Tensor, slate: torch.Tensor, labels: torch.Tensor, slate_mask: torch.Tensor | None = None
) -> torch.Tensor:
    """[N] bool: the highest-scored candidate overall is displayed and carries the slate's highest label."""
    slate_mask = torch.ones_like(slate, dtype=torch.bool) if slate_mask is None else slate_mask.bool()
    top = scores.argmax(dim=1, keepdim=True)
    best = labels.masked_fill(~slate_mask, NEG_INF).amax(dim=1, keepdim=True)
    shown_best = (slate == top) & slate_mask & (labels == best)
    return shown_best.any(dim=1) & (best.squeeze(1) > 0)


def reciprocal_rank(slate_scores: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """[N] float64: 1 / rank of the best-ranked relevant item (0 without one); ties by display position."""
    mask = _real(slate_scores, mask)
    rel = relevant(labels, mask)
    in_order = rel.gather(1, ranked(slate_scores, mask))
    rank = 1 + in_order.to(torch.int8).argmax(dim=1)  # argmax returns the first relevant position
    return torch.where(rel.any(dim=1), 1.0 / rank.to(torch.float64), 0.0)


def discounts(length: int, device: torch.device) -> torch.Tensor:
    return 1.0 / torch.log2(torch.arange(2, length + 2, device=device, dtype=torch.float64))


def dcg_at_k(ordered_gains: torch.Tensor, k: int) -> torch.Tensor:
    top = ordered_gains[:, :k].to(torch.float64)
    return (top * discounts(top.shape[1], top.device)).sum(dim=1)


def has_gain(gains: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """[N] bool: lists with a positive gain on a real item, i.e. an ideal DCG above 0 at every k >= 1."""
    return (gains.masked_fill(~mask, 0.0) > 0).any(dim=1)


def ndcg_at_k(scores: torch.Tensor, gains: torch.Tensor, k: int, mask: torch.Tensor | None = None) -> torch.Tensor:
    """[N] NDCG@k of ``scores`` against non-negative linear ``gains`` (0 where no gain exists).

    Padded items (``mask`` False, or -inf score) count as gain 0 and rank last. A list without
    gain scores 0 here (as in scikit-learn); callers leave such lists out of their means
    (``has_gain``), since there is no ranking to judge.
    """
    mask = _real(scores, mask)
    gains = gains.masked_fill(~mask, 0.0)
    dcg = dcg_at_k(gains.gather(1, ranked(scores, mask)), k)
    ideal = dcg_at_k(gains.sort(dim=1, descending=True).values, k)
    return torch.where(ideal > 0, dcg / ideal.clamp_min(torch.finfo(torch.float64).tiny), 0.0)


def average_precision_at_k(
    scores: torch.Tensor, labels: torch.Tensor, k: int, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """[N] AP@k: sum_{i <= k, item i relevant} precision@i / min(#relevant, k); 0 without relevant items."""
    mask = _real(scores, mask)
    rel = relevant(labels, mask).to(torch.float64)
    top = rel.gather(1, ranked(scores, mask))[:, :k]
    precision = top.cumsum(dim=1) / torch.arange(1, top.shape[1] + 1, device=top.device, dtype=torch.float64)
    denominator = rel.sum(dim=1).clamp(max=k)
    return torch.where(denominator > 0, (precision * top).sum(dim=1) / denominator.clamp_min(1), 0.0)


def precision_at_k(
    scores: torch.Tensor, labels: torch.Tensor, k: int, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """[N] relevant items among the top k / min(k, number of real items)."""
    mask = _real(scores, mask)
    rel = relevant(labels, mask).to(torch.float64)
    hits = rel.gather(1, ranked(scores, mask))[:, :k].sum(dim=1)
    return hits / mask.sum(dim=1).clamp(min=1, max=k).to(torch.float64)


def regret(slate_scores: torch.Tensor, slate_utility: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """[N] best displayed true utility minus the true utility of the model's top displayed item."""
    mask = _real(slate_scores, mask)
    utility = slate_utility.to(torch.float64)
    top = slate_scores.masked_fill(~mask, NEG_INF).argmax(dim=1, keepdim=True)
    best = utility.masked_fill(~mask, NEG_INF).amax(dim=1)
    return best - utility.gather(1, top).squeeze(1)


def utility_gains(slate_utility: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Linear gains from true utilities: utility minus the slate's lowest real utility (0 where padded)."""
    if mask is None:
        return slate_utility - slate_utility.min(dim=1, keepdim=True).values
    lowest = slate_utility.masked_fill(~mask, float("inf")).amin(dim=1, keepdim=True)
    return (slate_utility - lowest).masked_fill(~mask, 0.0)
