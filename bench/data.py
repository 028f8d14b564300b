"""The founding experiment's synthetic workload, generated vectorised on the target device.

World: a frozen hidden value model maps the user's features and the candidate list's
per-feature mean, std and max to per-user coefficients; a candidate's true utility is
its features dotted with those coefficients. The user is shown a random slate of T of
the S candidates and clicks the displayed item of highest utility.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

import torch

from bench.config import WorkloadConfig
from rerankers import SlateBatch

SPLITS = ("train", "valid", "test")


@dataclass(frozen=True)
class SlateData:
    """N lists: what the re-ranker sees, what was displayed, what was clicked, the truth."""

    inputs: SlateBatch  # items: [N, S, F], every candidate
    slate: torch.Tensor  # [N, T] long, candidate index of each displayed item, in display order
    # (inputs.positions[n, slate[n, t]] == t: the slate is the top of the initial order)
    clicks: torch.Tensor  # [N, T] float, one-hot on the clicked displayed item
    utility: torch.Tensor  # [N, S] float, true utility of every candidate

    def __len__(self) -> int:
        return self.slate.shape[0]

    def __getitem__(self, rows: slice | torch.Tensor) -> SlateData:
        return SlateData(
            **{f.name: getattr(self, f.name)[rows] for f in fields(self)},
        )

    def batches(self, batch_size: int):
        for start in range(0, len(self), batch_size):
            yield self[start : start + batch_size]

    @property
    def slate_utility(self) -> torch.Tensor:
        return self.utility.gather(1, self.slate)


@dataclass(frozen=True)
class HiddenValueModel:
    """Linear map (user, candidate mean, std, max) -> per-user utility coefficients."""

    weight: torch.Tensor  # [F, U + 3F]
    bias: torch.Tensor  # [F]

    @classmethod
    def create(cls, user_dim: int, item_dim: int, generator: torch.Generator) -> HiddenValueModel:
        device = generator.device
        fan_in, fan_out = user_dim + 3 * item_dim, item_dim
        # Same distributions as the founding code: xavier-uniform weight, and
        # nn.Linear's default uniform(+-1/sqrt(fan_in)) bias.
        w_bound = math.sqrt(6.0 / (fan_in + fan_out))
        b_bound = 1.0 / math.sqrt(fan_in)
        weight = (torch.rand(fan_out, fan_in, generator=generator, device=device) * 2 - 1) * w_bound
        bias = (torch.rand(fan_out, generator=generator, device=device) * 2 - 1) * b_bound
        return cls(weight, bias)

    def utility(self, user: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
        """[N, S] true utility of every candidate."""
        mean = candidates.mean(dim=1)
        # torch's std over a short middle dimension is slow; the two-pass formula is exact and fast.
        std = ((candidates - mean.unsqueeze(1)).square().sum(dim=1) / (candidates.shape[1] - 1)).sqrt()
        summary = torch.cat((user, mean, std, candidates.amax(dim=1)), dim=1)
        coefficients = summary @ self.weight.T + self.bias  # [N, F]
        return torch.einsum("nsf,nf->ns", candidates, coefficients)

    def score(self, batch: SlateBatch) -> torch.Tensor:
        """[B, L] true utility of a batch's items (the oracle's scores); lists without padding."""
        return self.utility(batch.user, batch.items)


def _split_seed(seed: int, split: str) -> int:
    # Each split has its own stream so the test set does not change when the
    # training set grows, and splits never share a draw.
    return (seed * 1_000_003 + 7919 * (SPLITS.index(split) + 1)) % (2**63)


def generate_split(config: WorkloadConfig, value_model: HiddenValueModel, n: int, seed: int, split: str) -> SlateData:
    device = value_model.weight.device
    g = torch.Generator(device=device).manual_seed(_split_seed(seed, split))
    S, T, U, F = config.candidates, config.slate_length, config.user_dim, config.item_dim
    user = torch.randn(n, U, generator=g, device=device)
    items = torch.randn(n, S, F, generator=g, device=device)
    # The last feature is the sum of the others, like a precomputed score in production.
    items[:, :, -1] = items[:, :, :-1].sum(dim=-1)
    # The upstream ranker's order: random, as in the founding experiment. The displayed
    # slate is its top T, so a random T-subset in random order.
    initial_order = torch.rand(n, S, generator=g, device=device).argsort(dim=1)
    slate = initial_order[:, :T]
    utility = value_model.utility(user, items)
    best = utility.gather(1, slate).argmax(dim=1)
    clicks = torch.zeros(n, T, device=device)
    clicks[torch.arange(n, device=device), best] = 1.0
    inputs = SlateBatch(
        user=user,
        items=items,
        mask=torch.ones(n, S, dtype=torch.bool, device=device),
        positions=initial_order.argsort(dim=1),
    )
    return SlateData(inputs, slate, clicks, utility)


@dataclass(frozen=True)
class Workload:
    train: SlateData
    valid: SlateData
    test: SlateData
    value_model: HiddenValueModel


@torch.no_grad()
def generate(config: WorkloadConfig, seed: int, device: torch.device | str = "cpu") -> Workload:
    """All three splits, fully determined by ``config``, ``seed`` and the device type."""
    g = torch.Generator(device=device).manual_seed(seed)
    value_model = HiddenValueModel.create(config.user_dim, config.item_dim, g)
    sizes = {
        "train": config.batch_size * config.batches,
        "valid": config.valid_slates,
        "test": config.test_slates,
    }
    splits = {s: generate_split(config, value_model, n, seed, s) for s, n in sizes.items()}
    return Workload(value_model=value_model, **splits)
