"""Training losses over a displayed slate's scores, and their registry.

Every loss has the signature ``loss(slate_scores [B, T], labels [B, T], mask [B, T] | None)``
and returns a scalar to minimise:

- ``slate_scores``: the model's scores of the displayed items; padded items may be -inf.
- ``labels``: one-hot or multi-hot clicks, or graded relevance (non-negative floats).
- ``mask``: True for real items. ``None`` means "every item not scored -inf is real".

Conventions shared by all losses (docs/workloads.md has the long form):
- Padded items never take part: they are replaced by a finite constant before any
  arithmetic, so the loss and its gradients stay finite even with -inf scores.
- Gains are linear (gain = label), like the reported NDCG.
- A list contributes only if it carries a training signal: the listwise and pairwise
  losses skip lists without any item of label > 0 (no click), ``bce`` uses every list
  with a real item (an unclicked list is a set of negatives). The batch loss is the mean
  over contributing lists; a batch without any is 0 (with a gradient of 0).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F

from bench.errors import ConfigError
from rerankers.registry import Registry

LossFn = Callable[..., torch.Tensor]


APPROX_NDCG_ALPHA = 1.0  # ApproxNDCG sigmoid sharpness (allRank's default)
NEURAL_SORT_TAU = 1.0  # NeuralNDCG temperature
SINKHORN_ITERATIONS = 30  # NeuralNDCG: row/column normalisation rounds
_FAR_BELOW = 1e3  # padded scores sit this far below the list's lowest real score


class UnknownLossError(ConfigError):
    """A loss name that is not registered."""


LOSSES: Registry[LossFn] = Registry("loss", UnknownLossError)


def register_loss(name: str) -> Callable[[LossFn], LossFn]:
    """Function decorator adding a loss under ``name``; a duplicate name raises."""

    def decorate(fn: LossFn) -> LossFn:
        return LOSSES.add(name, fn)

    return decorate


def loss_names() -> list[str]:
    return LOSSES.names()


def get_loss(name: str) -> LossFn:
    """The loss registered as ``name``; an unknown name raises with the known ones and a suggestion."""
    return LOSSES.lookup(name)


# --- shared plumbing -------------------------------------------------------------------


def _prepare(
    scores: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Finite scores (0 at padding), labels (0 at padding) and the real-item mask."""
    if mask is None:
        mask = scores != float("-inf")  # NaN counts as real, so a diverged model shows in the loss
    mask = mask.bool()
    finite = scores.masked_fill(~mask, 0.0)
    labels = labels.to(finite.dtype).masked_fill(~mask, 0.0)
    return finite, labels, mask


def _mean_over(per_list: torch.Tensor, contributes: torch.Tensor) -> torch.Tensor:
    """Mean of ``per_list`` over contributing lists; 0 (keeping the graph) when there are none."""
    weight = contributes.to(per_list.dtype)
    return (per_list * weight).sum() / weight.sum().clamp_min(1.0)


def _masked_log_softmax(scores: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """log softmax over real items; 0 at padding. A list without real items gets zeros."""
    safe = mask | ~mask.any(dim=1, keepdim=True)
    log_probs = torch.log_softmax(scores.masked_fill(~safe, float("-inf")), dim=1)
    return log_probs.masked_fill(~mask, 0.0)


def _has_relevant(labels: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return ((labels > 0) & mask).any(dim=1)


def _discounts(length: int, like: torch.Tensor) -> torch.Tensor:
    """1 / log2(rank + 1) for ranks 1..length."""
    ranks = torch.arange(1, length + 1, device=like.device, dtype=like.dtype)
    return 1.0 / torch.log2(ranks + 1.0)


def _ideal_dcg(labels: torch.Tensor) -> torch.Tensor:
    """[B] DCG of the labels sorted best first (padding carries label 0)."""
    ordered = labels.sort(dim=1, descending=True).values
    return (ordered * _discounts(labels.shape[1], labels)).sum(dim=1)


def _pairs(labels: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """[B, T, T] bool: real items i, j with label_i > label_j."""
    both = mask.unsqueeze(2) & mask.unsqueeze(1)
    return (labels.unsqueeze(2) > labels.unsqueeze(1)) & both


# --- the losses ------------------------------------------------------------------------


@register_loss("kl")
def kl_divergence(slate_scores: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """KL(p || softmax(scores)) with p = labels / sum(labels) (the founding loss).

    With one-hot clicks this is the cross-entropy of the clicked item, as in the founding
    code (``KLDivLoss`` against the one-hot click vector).
    """
    scores, labels, mask = _prepare(slate_scores, labels, mask)
    total = labels.sum(dim=1, keepdim=True)
    target = labels / total.clamp_min(torch.finfo(labels.dtype).tiny)
    log_probs = _masked_log_softmax(scores, mask)
    per_list = (torch.special.xlogy(target, target) - target * log_probs).sum(dim=1)
    return _mean_over(per_list, _has_relevant(labels, mask))


@register_loss("listnet")
def listnet(slate_scores: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """ListNet (Cao et al. 2007), top-one form: cross-entropy between softmax(labels) and softmax(scores)."""
    scores, labels, mask = _prepare(slate_scores, labels, mask)
    target = torch.exp(_masked_log_softmax(labels, mask)).masked_fill(~mask, 0.0)
    per_list = -(target * _masked_log_softmax(scores, mask)).sum(dim=1)
    return _mean_over(per_list, _has_relevant(labels, mask))


@register_loss("listmle")
def listmle(slate_scores: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """ListMLE (Xia et al. 2008): negative Plackett-Luce log-likelihood of the label order.

    Items are ordered by label, best first; ties are broken at random (torch's global
    generator), so equal labels are treated as exchangeable.
    """
    scores, labels, mask = _prepare(slate_scores, labels, mask)
    shuffle = torch.rand(labels.shape, device=labels.device).argsort(dim=1)
    key = labels.masked_fill(~mask, float("-inf")).gather(1, shuffle)
    order = shuffle.gather(1, key.argsort(dim=1, descending=True, stable=True))
    real = mask.gather(1, order)  # padding is last
    ordered = scores.gather(1, order)
    floor = ordered.detach().masked_fill(~real, math.inf).amin(dim=1, keepdim=True)
    floor = torch.where(torch.isfinite(floor), floor, torch.zeros_like(floor))
    ordered = torch.where(real, ordered, floor - _FAR_BELOW)  # exp() of these is exactly 0
    # log sum_{j >= i} exp(s_j): a cumulative log-sum-exp from the end of the list.
    tail = torch.logcumsumexp(ordered.flip(1), dim=1).flip(1)
    per_list = ((tail - ordered) * real).sum(dim=1)
    return _mean_over(per_list, _has_relevant(labels, mask))


@register_loss("ranknet")
def ranknet(slate_scores: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """RankNet (Burges et al. 2005): logistic loss log(1 + exp(-(s_i - s_j))) per pair with label_i > label_j.

    Averaged over a list's pairs, then over lists.
    """
    scores, labels, mask = _prepare(slate_scores, labels, mask)
    pairs = _pairs(labels, mask)
    losses = F.softplus(scores.unsqueeze(1) - scores.unsqueeze(2))  # [b, i, j] = softplus(s_j - s_i)
    count = pairs.sum(dim=(1, 2))
    per_list = (losses * pairs).sum(dim=(1, 2)) / count.clamp_min(1)
    return _mean_over(per_list, count > 0)


def _current_ranks(scores: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """[B, T] 1-based rank of each item when sorted by (detached) score; padding ranks last."""
    order = scores.detach().masked_fill(~mask, float("-inf")).argsort(dim=1, descending=True, stable=True)
    ranks = torch.empty_like(order)
    ranks.scatter_(1, order, torch.arange(1, order.shape[1] + 1, device=order.device).expand_as(order))
    return ranks


@register_loss("lambdaloss")
def lambdaloss(slate_scores: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """LambdaLoss (Wang et al. 2018) with the LambdaRank weighting: NDCG-weighted pairwise logistic loss.

    sum over pairs with label_i > label_j of |ΔNDCG_ij| * log2(1 + exp(-(s_i - s_j))), where
    |ΔNDCG_ij| = |G_i - G_j| * |1/log2(1 + r_i) - 1/log2(1 + r_j)| / ideal DCG is the NDCG
    change of swapping i and j in the current ranking (ranks r from the detached scores,
    linear gains G = label).
    """
    scores, labels, mask = _prepare(slate_scores, labels, mask)
    pairs = _pairs(labels, mask)
    discount = 1.0 / torch.log2(_current_ranks(scores, mask).to(scores.dtype) + 1.0)
    ideal = _ideal_dcg(labels)
    weight = (labels.unsqueeze(2) - labels.unsqueeze(1)).abs() * (discount.unsqueeze(2) - discount.unsqueeze(1)).abs()
    weight = weight / ideal.clamp_min(torch.finfo(scores.dtype).tiny).view(-1, 1, 1)
    logistic = F.softplus(scores.unsqueeze(1) - scores.unsqueeze(2)) / math.log(2.0)
    per_list = (weight * logistic * pairs).sum(dim=(1, 2))
    return _mean_over(per_list, pairs.any(dim=(1, 2)) & (ideal > 0))


@register_loss("approxndcg")
def approxndcg(slate_scores: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """ApproxNDCG (Qin et al. 2010): minus NDCG with ranks approximated by sigmoids.

    rank_i ~ 1 + sum_{j != i, real} sigmoid(alpha * (s_j - s_i)), alpha = APPROX_NDCG_ALPHA;
    NDCG = sum_i G_i / log2(1 + rank_i) / ideal DCG with linear gains G = label.
    """
    scores, labels, mask = _prepare(slate_scores, labels, mask)
    both = mask.unsqueeze(2) & mask.unsqueeze(1)
    eye = torch.eye(scores.shape[1], dtype=torch.bool, device=scores.device)
    beats = torch.sigmoid(APPROX_NDCG_ALPHA * (scores.unsqueeze(1) - scores.unsqueeze(2)))  # [b, i, j]: s_j over s_i
    approx_rank = 1.0 + (beats * (both & ~eye)).sum(dim=2)
    ideal = _ideal_dcg(labels)
    dcg = (labels / torch.log2(1.0 + approx_rank)).sum(dim=1)
    per_list = -dcg / ideal.clamp_min(torch.finfo(scores.dtype).tiny)
    return _mean_over(per_list, ideal > 0)


def neural_sort(scores: torch.Tensor, mask: torch.Tensor, tau: float = NEURAL_SORT_TAU) -> torch.Tensor:
    """[B, T, T] NeuralSort relaxation (Grover et al. 2019) of the descending-sort permutation matrix.

    Row i (rank i + 1) is softmax_j(((n + 1 - 2(i + 1)) s_j - sum_k |s_j - s_k|) / tau) over the
    list's n real items; rows i >= n and padded columns are 0.
    """
    real = mask.to(scores.dtype)
    n = real.sum(dim=1, keepdim=True)  # [B, 1]
    spread = ((scores.unsqueeze(2) - scores.unsqueeze(1)).abs() * real.unsqueeze(1)).sum(dim=2)  # [B, T]
    rank = torch.arange(1, scores.shape[1] + 1, device=scores.device, dtype=scores.dtype)
    scale = (n + 1 - 2 * rank).unsqueeze(2)  # [B, T(rows), 1]
    logits = (scale * scores.unsqueeze(1) - spread.unsqueeze(1)) / tau
    safe_columns = mask | ~mask.any(dim=1, keepdim=True)
    probs = torch.softmax(logits.masked_fill(~safe_columns.unsqueeze(1), float("-inf")), dim=2)
    rows = rank.unsqueeze(0) <= n  # [B, T]
    return probs * (rows.unsqueeze(2) & mask.unsqueeze(1))


def sinkhorn(matrix: torch.Tensor, iterations: int = SINKHORN_ITERATIONS) -> torch.Tensor:
    """Alternate row and column normalisation towards a doubly stochastic matrix (zero rows stay 0)."""
    for _ in range(iterations):
        for dim in (2, 1):
            total = matrix.sum(dim=dim, keepdim=True)
            # An all-zero row or column stays 0; dividing it by 1 keeps the gradient finite.
            matrix = matrix / torch.where(total > 0, total, torch.ones_like(total))
    return matrix


@register_loss("neuralndcg")
def neuralndcg(slate_scores: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """NeuralNDCG (Pobrotyn & Bialobrzeski 2021): minus NDCG of the NeuralSort-relaxed ranking.

    The relaxed permutation P (NeuralSort, temperature NEURAL_SORT_TAU, then Sinkhorn
    scaling) sorts the gains softly: NDCG = sum_r (P G)_r / log2(1 + r) / ideal DCG, with
    linear gains G = label, over the whole list.
    """
    scores, labels, mask = _prepare(slate_scores, labels, mask)
    permutation = sinkhorn(neural_sort(scores, mask))
    sorted_gains = permutation @ labels.unsqueeze(2)  # [B, T, 1]
    dcg = (sorted_gains.squeeze(2) * _discounts(scores.shape[1], scores)).sum(dim=1)
    ideal = _ideal_dcg(labels)
    per_list = -dcg / ideal.clamp_min(torch.finfo(scores.dtype).tiny)
    return _mean_over(per_list, ideal > 0)


@register_loss("bce")
def bce(slate_scores: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Pointwise binary cross-entropy of sigmoid(score) against "label > 0" (relevant or clicked).

    Averaged over a list's real items, then over lists; lists without a click count.
    """
    scores, labels, mask = _prepare(slate_scores, labels, mask)
    target = (labels > 0).to(scores.dtype)
    per_item = F.binary_cross_entropy_with_logits(scores, target, reduction="none") * mask
    count = mask.sum(dim=1)
    per_list = per_item.sum(dim=1) / count.clamp_min(1)
    return _mean_over(per_list, count > 0)
