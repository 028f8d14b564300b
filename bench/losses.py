"""Training losses over a slate's scores. Scores of padded items are -inf."""

from __future__ import annotations

from collections.abc import Callable

import torch

Loss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def kl_divergence(slate_scores: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """KL(target || softmax(scores)) averaged over the batch (the founding loss).

    ``target`` is a distribution over the slate (one-hot for a single click).
    """
    target = target / target.sum(dim=1, keepdim=True)
    log_probs = torch.log_softmax(slate_scores, dim=1)
    # Where target is 0 the term is 0 even if log_prob is -inf (padding).
    terms = torch.where(target > 0, target * (torch.log(target) - log_probs), 0.0)
    return terms.sum(dim=1).mean()


LOSSES: dict[str, Loss] = {"kl": kl_divergence}
