"""GSF: groupwise multivariate scoring functions (Ai et al., ICTIR 2019)."""

from __future__ import annotations

import functools
import itertools
import math
import operator

import torch
from torch import nn

from rerankers.batch import SlateBatch, mask_padding
from rerankers.registry import register

HASH_SEED = 0x65F  # fixes the projections that turn an item's features into its shuffle keys


@register(
    "gsf",
    permutation_equivariant=True,
    # Capped so that the costliest point (d 88, groups of 2, 3 layers) trains at most ~2x the default cell's FLOPs
    # per sample (1.88x; groups of 3 at d 88: 2.5x, d 128: 3.95x): docs/tuning.md.
    search_space={"d_model": [32, 64, 88], "group_size": [1, 2], "hidden_layers": [2, 3]},
)
class GSF(nn.Module):
    """GSF (Ai et al. 2019): an MLP scores groups of g items jointly; an item's score averages its groups.

    The groupwise scoring function takes the user's features and the features of g items
    (concatenated in group order) and returns g scores, one per member, through ``hidden_layers``
    hidden layers of widths halving from ``2 * d_model`` (128-64-32 by default; d_model 128 gives
    TF-Ranking's 256-128-64), each linear + batch norm + ReLU (the references' scorer; the
    first layer's item part is computed once per item and group slot and summed per group: the
    same linear map, cheaper). Batch norm sees only the groups whose members are all real, so
    padding never changes a score. An item's score is the mean of the scores it received over
    the groups that contain it.

    Groups: when a list of L slots has at most ``max_groups`` ordered g-tuples of distinct slots
    (L!/(L-g)!), all of them are used, and only those whose members are all real count: exact,
    deterministic and permutation-equivariant; every real item of a list of n real items sits in
    g (n-1)!/(n-g)! groups. Otherwise groups are sampled: ``max(1, max_groups // L)`` shuffles of
    the list's real items, each cut into n circular windows of g, so every real item sits in
    exactly g groups per shuffle (a list shorter than g repeats items inside a window). In train
    mode the shuffles are fresh random draws at every call (torch's global generator), so
    training sees many groupings; in eval mode an item's place in a shuffle is a fixed
    pseudo-random function (a hash) of its own features, so a list scores the same at every
    call, in any batch and any storage order (exactly permutation-equivariant). Lists with fewer
    than g real items have no exact group and all their items score 0 (a tie).

    Cost per list: O(L g F h_1) for the first layer's item parts, then per group O(g h_1) to sum
    them + O(sum of h_i h_(i+1)) + O(h_last g). The default widths keep its FLOPs per list near
    the founding transformer's at the default profile's sizes; TF-Ranking's widths there (d_model
    128) cost about 3.7 times the transformer's. Exact groups grow as L^g (L=10: g=1 10, g=2 90,
    g=3 720, g=4 5,040); ``max_groups`` caps them at about max_groups, so at a fixed budget the
    cost grows only linearly in g. g=1 is a pointwise MLP.
    """

    def __init__(
        self,
        user_dim: int,
        item_dim: int,
        group_size: int = 2,
        d_model: int = 64,
        hidden_layers: int = 3,
        max_groups: int = 128,
    ) -> None:
        super().__init__()
        if hidden_layers < 1:
            raise ValueError(f"hidden_layers must be at least 1, got {hidden_layers}")
        # Widths halve from 2 d_model, the shape of the references' scorers: d_model 128 gives
        # TF-Ranking's 256-128-64, 256 LibRerank's 512-256-128.
        hidden_sizes = [max(1, 2 * d_model >> layer) for layer in range(hidden_layers)]
        self.group_size, self.max_groups, self.width = group_size, max_groups, hidden_sizes[0]
        # The first layer is linear in the concatenation [user, x_1, ..., x_g], so it is split
        # into a user part and one item part per group slot, computed once per item and summed
        # per group: the same function, without recomputing an item's projection in every group.
        self.user_in = nn.Linear(user_dim, self.width)
        self.item_in = nn.Linear(item_dim, group_size * self.width, bias=False)
        layers: list[nn.Module] = [nn.BatchNorm1d(self.width), nn.ReLU()]
        for width_in, width in itertools.pairwise(hidden_sizes):
            layers += [nn.Linear(width_in, width), nn.BatchNorm1d(width), nn.ReLU()]
        layers.append(nn.Linear(hidden_sizes[-1], group_size))
        self.net = nn.Sequential(*layers)
        self._exact: dict[tuple[int, torch.device], torch.Tensor] = {}
        self._projections: dict[tuple[int, int, torch.device], torch.Tensor] = {}

    def _exact_groups(self, length: int, device: torch.device) -> torch.Tensor:
        """[G, g] every ordered tuple of g distinct slots."""
        key = (length, device)
        if key not in self._exact:
            tuples = list(itertools.permutations(range(length), self.group_size))
            self._exact[key] = torch.tensor(tuples, dtype=torch.long, device=device).view(-1, self.group_size)
        return self._exact[key]

    def _item_keys(self, items: torch.Tensor, shuffles: int) -> torch.Tensor:
        """[B, shuffles, L] keys in [0, 1), each a hash of the item's own features (float64). The projection is
        drawn on the CPU once per shape and device and kept there: no host-to-device copy per forward pass."""
        key = (items.shape[-1], shuffles, items.device)
        if key not in self._projections:
            g = torch.Generator().manual_seed(HASH_SEED)
            projection = torch.randn(items.shape[-1], shuffles, generator=g, dtype=torch.float64)
            self._projections[key] = projection.to(items.device)
        projection = self._projections[key]
        return torch.remainder(torch.sin(items.double() @ projection) * 43758.5453, 1.0).transpose(1, 2)

    def _sampled_groups(self, batch: SlateBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """[B, G, g] slot indices of circular windows over shuffles of the real items, and [B, G] validity."""
        mask = batch.mask
        rows, length = mask.shape
        shuffles = max(1, self.max_groups // length)
        if self.training:
            keys = torch.rand(rows, shuffles, length, device=mask.device, dtype=torch.float64)
        else:
            keys = self._item_keys(batch.items, shuffles)
        shuffled = keys.masked_fill(~mask.unsqueeze(1), 2.0).argsort(dim=-1)  # real items first, shuffled
        real = mask.sum(dim=1).clamp_min(1)  # [B]
        starts = torch.arange(length, device=mask.device)
        offsets = torch.arange(self.group_size, device=mask.device)
        windows = (starts[:, None] + offsets[None, :]).unsqueeze(0) % real[:, None, None]  # [B, L, g]
        members = shuffled.gather(2, windows.view(rows, 1, -1).expand(-1, shuffles, -1))
        valid = (starts.unsqueeze(0) < mask.sum(dim=1, keepdim=True)).unsqueeze(1).expand(-1, shuffles, -1)
        return members.reshape(rows, -1, self.group_size), valid.reshape(rows, -1)

    def forward(self, batch: SlateBatch) -> torch.Tensor:
        rows, length = batch.mask.shape
        g = self.group_size
        # [g, B, L, h]: each slot's part of the first layer, per item (contiguous per slot, for the gathers below);
        # the user's part joins the first slot's per item, before the groups multiply the rows
        per_slot = self.item_in(batch.items).view(rows, length, g, self.width).permute(2, 0, 1, 3).contiguous()
        parts = [self.user_in(batch.user).unsqueeze(1) + per_slot[0], *per_slot[1:]]
        if math.perm(length, g) <= self.max_groups:
            exact = self._exact_groups(length, batch.items.device)  # the same groups for every list
            gathered = [part.index_select(1, exact[:, slot]) for slot, part in enumerate(parts)]
            members = exact.unsqueeze(0).expand(rows, -1, -1)
            valid = batch.mask.gather(1, members.reshape(rows, -1)).view(rows, -1, g).all(dim=-1)
        else:
            members, valid = self._sampled_groups(batch)
            index = members.unsqueeze(-1).expand(-1, -1, -1, self.width)  # [B, G, g, h]
            gathered = [part.gather(1, index[:, :, slot]) for slot, part in enumerate(parts)]
        hidden = functools.reduce(operator.add, gathered)  # [B, G, h]: each group's first-layer sum
        groups = members.shape[1]
        outputs = self._score_groups(hidden, valid).view(rows, groups, g)
        flat = members.reshape(rows, groups * g)
        weight = valid.unsqueeze(-1).expand(-1, -1, g).reshape(rows, -1)
        totals = torch.zeros(rows, length, device=outputs.device, dtype=outputs.dtype).scatter_add(
            1, flat, outputs.reshape(rows, -1)
        )
        counts = torch.zeros_like(totals).scatter_add(1, flat, weight.to(outputs.dtype))
        return mask_padding(totals / counts.clamp_min(1.0), batch.mask)

    def _score_groups(self, hidden: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """[B, G, g] the net's scores of the valid groups (0 for the others), from their first-layer sums [B, G, h].

        Batch norm's statistics in training must come from the valid groups only, so padding never changes a
        score. Two ways to the same function: where the host may read ``valid`` for free (``host_reads_are_free``:
        on a CPU there is no device queue to wait for), only the valid groups go through the net (all of them as
        they lie when no group is padded), with torch's own batch norm; elsewhere every group goes through the net
        with ``masked_batch_norm``, whose statistics skip the invalid groups, and their outputs are zeroed: no step
        reads ``valid`` on the host, so a GPU never waits. On a CPU the first way is about 3x faster for the
        default cell (docs/performance.md).
        """
        rows, groups, _ = hidden.shape
        if host_reads_are_free(hidden.device):
            if bool(valid.all()):
                return self.net(hidden.reshape(rows * groups, self.width)).view(rows, groups, -1)
            outputs = hidden.new_zeros(rows, groups, self.group_size)
            if valid.any():
                outputs[valid] = self.net(hidden[valid])
            return outputs
        flat = hidden.reshape(rows * groups, self.width)
        keep = valid.reshape(-1, 1)
        for layer in self.net:
            flat = masked_batch_norm(layer, flat, keep) if isinstance(layer, nn.BatchNorm1d) else layer(flat)
        return flat.view(rows, groups, -1).masked_fill(~valid.unsqueeze(-1), 0.0)


def host_reads_are_free(device: torch.device) -> bool:
    """Whether reading a tensor's value on the host costs no wait for a device: on a CPU the value is already
    there. (A test swaps this for ``False`` to run, and probe, the path an accelerator takes.)"""
    return device.type == "cpu"


def masked_batch_norm(norm: nn.BatchNorm1d, x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """``norm`` applied to the rows of ``x`` [N, C] with ``keep`` [N, 1] true, as ``norm(x[keep])`` would (its
    statistics, its running averages updated with momentum, the unbiased variance, none of it changed when no row
    is kept); the other rows are normalised with the same statistics. Eval mode uses the running statistics, row by
    row, as ``norm`` does. Equal to ``norm(x[keep])`` up to rounding, without the data-dependent shape."""
    if not norm.training or norm.running_mean is None or norm.momentum is None:
        return norm(x)
    weight = keep.to(torch.float32)
    count = weight.sum()
    mean = (x * weight).sum(dim=0) / count.clamp_min(1)
    squares = ((x - mean) * weight).square().sum(dim=0)
    variance = squares / count.clamp_min(1)
    with torch.no_grad():
        seen = count > 0
        momentum = norm.momentum
        unbiased = squares / (count - 1).clamp_min(1)
        for running, batch_value in ((norm.running_mean, mean), (norm.running_var, unbiased)):
            running.copy_(torch.where(seen, (1 - momentum) * running + momentum * batch_value, running))
        norm.num_batches_tracked.add_(seen.long())
    out = (x - mean) * torch.rsqrt(variance + norm.eps)
    return out * norm.weight + norm.bias if norm.affine else out
