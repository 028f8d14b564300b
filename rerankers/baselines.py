"""Reference points that learn nothing: a floor (random), the upstream order, and a ceiling (oracle)."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from rerankers.batch import SlateBatch, mask_padding
from rerankers.precision import exact_fp32
from rerankers.registry import register

UtilityFn = Callable[[SlateBatch], torch.Tensor]


@register("random", trainable=False)
class RandomReranker(nn.Module):
    """Floor: a uniformly random order (scores drawn from torch's global generator)."""

    def __init__(self, user_dim: int, item_dim: int) -> None:
        super().__init__()

    def forward(self, batch: SlateBatch) -> torch.Tensor:
        # One draw per slot, padded ones included, so real items' scores do not depend on
        # the padding; reproducible under torch.manual_seed.
        scores = torch.rand(batch.mask.shape, device=batch.items.device)
        return mask_padding(scores, batch.mask)


@register("initial", trainable=False)
class InitialOrderReranker(nn.Module):
    """Keeps the initial (upstream) order: score = -initial rank, so the displayed order is unchanged."""

    def __init__(self, user_dim: int, item_dim: int) -> None:
        super().__init__()

    def forward(self, batch: SlateBatch) -> torch.Tensor:
        return mask_padding(-batch.positions.to(batch.items.dtype), batch.mask)


@register("oracle", permutation_equivariant=True, trainable=False, needs_utility=True)
class OracleReranker(nn.Module):
    """Ceiling: scores every item so that its order is the best the truth knows (synthetic data only).

    ``utility_fn(batch) -> [B, L]`` is supplied by whoever knows the truth: the benchmark passes the
    synthetic workload's true utilities, or, in a world where displayed items change each other's value,
    scores that put each displayed slate in its best order. Without one the model still constructs (for
    listings and parameter counts) but cannot score. It is as permutation-equivariant as its utility
    function; the synthetic ones are (they see the list through per-feature mean, std and max, and the
    displayed slate through the initial ranks). The utilities are computed in plain fp32 whatever the cell's
    precision (bf16 autocast, TF32), as the truth was: near-ties break as they did there, so the ceiling is exact.
    """

    def __init__(self, user_dim: int, item_dim: int, utility_fn: UtilityFn | None = None) -> None:
        super().__init__()
        self.utility_fn = utility_fn

    def forward(self, batch: SlateBatch) -> torch.Tensor:
        if self.utility_fn is None:
            raise RuntimeError(
                "the oracle needs a utility_fn (the true utility of each item); "
                "only workloads that know it (synthetic data) can provide one"
            )
        with exact_fp32(batch.items.device.type):
            utility = self.utility_fn(batch)
        return mask_padding(utility.to(batch.items.dtype), batch.mask)
