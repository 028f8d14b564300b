"""The one input every re-ranker takes."""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch


@dataclass(frozen=True)
class SlateBatch:
    """A batch of lists to score.

    user:      [B, U] float, the user's (request's) features.
    items:     [B, L, F] float, features of every item in the list.
    mask:      [B, L] bool, True for real items, False for padding.
    positions: [B, L] long, each item's 0-based rank in the initial (upstream) order.
    """

    user: torch.Tensor
    items: torch.Tensor
    mask: torch.Tensor
    positions: torch.Tensor

    def to(self, device: torch.device | str) -> SlateBatch:
        return SlateBatch(**{f.name: getattr(self, f.name).to(device) for f in fields(self)})

    def __getitem__(self, rows: slice | torch.Tensor) -> SlateBatch:
        return SlateBatch(**{f.name: getattr(self, f.name)[rows] for f in fields(self)})

    def __len__(self) -> int:
        return self.items.shape[0]


def user_item_features(batch: SlateBatch) -> torch.Tensor:
    """[B, L, U + F]: the user's features concatenated to every item's."""
    user = batch.user.unsqueeze(1).expand(-1, batch.items.shape[1], -1)
    return torch.cat((user, batch.items), dim=-1)


def mask_padding(scores: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Padded items score -inf so that no sort, top-k or softmax can pick them."""
    return scores.masked_fill(~mask, float("-inf"))


def reading_order(batch: SlateBatch, reverse: bool = False) -> torch.Tensor:
    """[B, L] slot indices that list each row's real items by initial rank, padding last.

    ``reverse=True`` lists the real items from the lowest-ranked to the top-ranked one (still
    padding last), so a recurrent reader ends on the top item of every list, whatever its length.
    """
    key = -batch.positions if reverse else batch.positions
    key = key.masked_fill(~batch.mask, torch.iinfo(key.dtype).max)
    return key.argsort(dim=1, stable=True)


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """[B, D] mean of ``values`` [B, L, D] over each row's real items (0 for a row with none)."""
    real = mask.unsqueeze(-1)
    count = real.sum(dim=1).clamp_min(1).to(values.dtype)
    return values.masked_fill(~real, 0.0).sum(dim=1) / count
