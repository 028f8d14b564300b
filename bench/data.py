"""Synthetic workloads, generated vectorised on the CPU from seeded generators, then moved to the device once.

World (the founding experiment's): a frozen hidden value model maps the user's features
and the candidate list's per-feature mean, std and max to per-user coefficients; a
candidate's true utility is its features dotted with those coefficients.

What the user sees and does is set by the workload knobs (docs/workloads.md):
- the initial (upstream) order: random (``initial_noise`` None, the founding default) or
  by true utility plus Gaussian noise; the displayed slate is its top T;
- variable slate lengths (``slate_min``..``slate_length``), padded and masked;
- the click model: ``best`` (founding: one click on the best displayed item),
  ``position-biased``, ``cascade`` or ``multi-click``;
- the labels the model trains and is evaluated on: the clicks, or graded relevance
  derived from utility quantiles.

With every knob at its default the data is bit-identical to the founding generator's. Drawn on the
CPU, a seed's data is the same bits whatever device the cell runs on, so CPU and GPU cells pair.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, fields

import torch

from bench.config import CLICK_MODELS, DATA_DEVICE, WorkloadConfig
from bench.worlds import World, best_order_scores, calibrated, world_of
from rerankers import SlateBatch

SPLITS = ("train", "valid", "test")

# Graded relevance: grade g in 0..4 counts how many of these quantiles of the world's
# candidate utilities a candidate's utility exceeds (half the candidates are grade 0).
GRADE_QUANTILES = (0.5, 0.75, 0.9, 0.97)
MAX_GRADE = len(GRADE_QUANTILES)
CALIBRATION_LISTS = 4096  # lists drawn (from their own stream) to estimate the quantiles
# Attractiveness of a candidate of grade g: NOISE + (1 - NOISE) * (2^g - 1) / (2^MAX_GRADE - 1).
CLICK_NOISE = 0.1
MULTI_CLICK_CONTINUE = 0.5  # multi-click: probability of scanning on after a click


@dataclass(frozen=True)
class SlateData:
    """N lists: what the re-ranker sees, what was displayed, the labels, the truth."""

    inputs: SlateBatch  # items: [N, S, F], every candidate; inputs.mask marks real candidates
    slate: torch.Tensor  # [N, T] long, candidate index of each displayed item, in display order
    # (inputs.positions[n, slate[n, t]] == t: the slate is the top of the initial order)
    labels: torch.Tensor  # [N, T] float: clicks (0/1, any number) or graded relevance; 0 where padded
    utility: torch.Tensor  # [N, S] float, true utility of every candidate (0 for padded candidates)
    slate_mask: torch.Tensor | None = None  # [N, T] bool, True for a displayed item (None: all)

    def __post_init__(self) -> None:
        if self.slate_mask is None:
            object.__setattr__(self, "slate_mask", torch.ones_like(self.slate, dtype=torch.bool))

    def __len__(self) -> int:
        return self.slate.shape[0]

    def __getitem__(self, rows: slice | torch.Tensor) -> SlateData:
        return SlateData(
            **{f.name: getattr(self, f.name)[rows] for f in fields(self)},
        )

    def batches(self, batch_size: int):
        for start in range(0, len(self), batch_size):
            yield self[start : start + batch_size]

    def to(self, device: torch.device | str) -> SlateData:
        moved = {f.name: getattr(self, f.name) for f in fields(self)}
        return SlateData(**{name: value.to(device) for name, value in moved.items()})

    @property
    def clicks(self) -> torch.Tensor:
        """The labels (the clicks unless the workload uses graded labels); kept for older callers."""
        return self.labels

    @property
    def slate_utility(self) -> torch.Tensor:
        """[N, T] context-free true utility of each displayed item (bench/worlds.py adds the context)."""
        return self.utility.gather(1, self.slate)

    @property
    def slate_items(self) -> torch.Tensor:
        """[N, T, F] features of each displayed item, in display order."""
        return gather_items(self.inputs.items, self.slate)


def gather_items(items: torch.Tensor, slate: torch.Tensor) -> torch.Tensor:
    """[N, T, F] the features of the candidates ``slate`` [N, T] names, from ``items`` [N, S, F]."""
    return items.gather(1, slate.unsqueeze(2).expand(-1, -1, items.shape[2]))


def _masked_summary(candidates: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per-feature mean, std (n - 1) and max over each list's real candidates: [N, 3F]."""
    real = mask.unsqueeze(2).to(candidates.dtype)
    count = real.sum(dim=1)
    mean = (candidates * real).sum(dim=1) / count
    var = (((candidates - mean.unsqueeze(1)) * real) ** 2).sum(dim=1) / (count - 1).clamp_min(1)
    top = candidates.masked_fill(~mask.unsqueeze(2), float("-inf")).amax(dim=1)
    return torch.cat((mean, var.sqrt(), top), dim=1)


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

    def to(self, device: torch.device | str) -> HiddenValueModel:
        return HiddenValueModel(self.weight.to(device), self.bias.to(device))

    def utility(self, user: torch.Tensor, candidates: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """[N, S] true utility of every candidate; the summaries cover real candidates only."""
        if mask is None:  # the founding path
            mean = candidates.mean(dim=1)
            # torch's std over a short middle dimension is slow; the two-pass formula is exact and fast.
            # (squared in place: one fewer list-sized temporary, each costs fresh pages)
            std = ((candidates - mean.unsqueeze(1)).square_().sum(dim=1) / (candidates.shape[1] - 1)).sqrt()
            summary = torch.cat((mean, std, candidates.amax(dim=1)), dim=1)
        else:
            summary = _masked_summary(candidates, mask)
        coefficients = torch.cat((user, summary), dim=1) @ self.weight.T + self.bias  # [N, F]
        utility = torch.einsum("nsf,nf->ns", candidates, coefficients)
        return utility if mask is None else utility.masked_fill(~mask, 0.0)

    def score(self, batch: SlateBatch) -> torch.Tensor:
        """[B, L] true utility of a batch's items (the oracle's scores). Always the masked summaries: on a list
        without padding they equal the founding path's bit for bit (a test), and choosing between the two
        would read the mask on the host (a synchronisation on a GPU)."""
        return self.utility(batch.user, batch.items, batch.mask)


def _split_seed(seed: int, split: str) -> int:
    # Each split has its own stream so the test set does not change when the
    # training set grows, and splits never share a draw.
    return (seed * 1_000_003 + 7919 * (SPLITS.index(split) + 1)) % (2**63)


def _calibration_seed(seed: int) -> int:
    return (seed * 1_000_003 + 7919 * (len(SPLITS) + 1)) % (2**63)


def grades(utility: torch.Tensor, thresholds: torch.Tensor) -> torch.Tensor:
    """Graded relevance 0..MAX_GRADE: how many utility quantile thresholds a candidate exceeds."""
    return (utility.unsqueeze(-1) > thresholds).sum(dim=-1).to(utility.dtype)


def attractiveness(grade: torch.Tensor) -> torch.Tensor:
    """Probability that a user who examines an item of this grade clicks it."""
    return CLICK_NOISE + (1 - CLICK_NOISE) * (2.0**grade - 1) / (2.0**MAX_GRADE - 1)


def simulate_clicks(
    click_model: str,
    slate_utility: torch.Tensor,
    slate_grades: torch.Tensor | None,
    slate_mask: torch.Tensor,
    eta: float,
    generator: torch.Generator,
) -> torch.Tensor:
    """[N, T] 0/1 clicks on the displayed slate (display rank r = 1..T); none on padding.

    best:            one click, on the displayed item of highest utility (the founding rule).
    position-biased: each item is examined with probability 1 / r^eta and, if examined,
                     clicked with its attractiveness; any number of clicks, possibly none.
    cascade:         the user scans top-down and clicks the first attractive item, then stops.
    multi-click:     the user scans top-down, clicks every attractive item examined, and
                     after each click scans on with probability MULTI_CLICK_CONTINUE.
    """
    n, T = slate_utility.shape
    device = slate_utility.device
    if click_model == "best":
        best = slate_utility.masked_fill(~slate_mask, float("-inf")).argmax(dim=1)
        clicks = torch.zeros(n, T, device=device)
        clicks[torch.arange(n, device=device), best] = 1.0
        return clicks
    assert slate_grades is not None
    attractive = torch.rand(n, T, generator=generator, device=device) < attractiveness(slate_grades)
    attractive &= slate_mask
    if click_model == "position-biased":
        rank = torch.arange(1, T + 1, device=device, dtype=slate_utility.dtype)
        examined = torch.rand(n, T, generator=generator, device=device) < rank.pow(-eta)
        return (examined & attractive).float()
    if click_model == "cascade":
        return (attractive & (attractive.cumsum(dim=1) == 1)).float()
    if click_model == "multi-click":
        scan_on = torch.rand(n, T, generator=generator, device=device) < MULTI_CLICK_CONTINUE
        clicks = torch.zeros(n, T, dtype=torch.bool, device=device)
        examining = torch.ones(n, dtype=torch.bool, device=device)
        for r in range(T):
            clicks[:, r] = examining & attractive[:, r]
            examining &= ~clicks[:, r] | scan_on[:, r]
        return clicks.float()
    raise ValueError(f"unknown click model {click_model!r} (known: {', '.join(CLICK_MODELS)})")


def inverse_permutation(order: torch.Tensor) -> torch.Tensor:
    """Row-wise inverse of permutations [N, S] (== order.argsort(dim=1), without a sort)."""
    ranks = torch.arange(order.shape[1], device=order.device).expand_as(order)
    return torch.empty_like(order).scatter_(1, order, ranks)


def _initial_order(
    config: WorkloadConfig, utility: torch.Tensor, mask: torch.Tensor, random_keys: torch.Tensor, g: torch.Generator
) -> torch.Tensor:
    """[N, S] candidates in the upstream ranker's order; padding ranks last."""
    if config.initial_noise is None:
        # Random, as in the founding experiment: the displayed slate is a random T-subset in random order.
        keys = random_keys if bool(mask.all()) else random_keys.masked_fill(~mask, 2.0)
        return keys.argsort(dim=1)
    # An informative upstream ranker: the list's standardised (context-free) true utility plus noise.
    real = mask.to(utility.dtype)
    count = real.sum(dim=1, keepdim=True)
    mean = (utility * real).sum(dim=1, keepdim=True) / count
    std = ((((utility - mean) * real) ** 2).sum(dim=1, keepdim=True) / count).sqrt()
    z = (utility - mean) / torch.where(std > 0, std, torch.ones_like(std))
    noise = torch.randn(*utility.shape, generator=g, device=utility.device)
    keys = (z + config.initial_noise * noise).masked_fill(~mask, float("-inf"))
    return keys.argsort(dim=1, descending=True, stable=True)


def generate_split(
    config: WorkloadConfig,
    value_model: HiddenValueModel,
    n: int,
    seed: int,
    split: str,
    thresholds: torch.Tensor | None = None,
    world: World | None = None,
) -> SlateData:
    """``n`` lists of one split. ``world`` (default: the independent one) turns the displayed items' utilities
    into contextual ones (bench/worlds.py) before the labels are drawn from them."""
    device = value_model.weight.device
    g = torch.Generator(device=device).manual_seed(_split_seed(seed, split))
    S, T, U, F = config.candidates, config.slate_length, config.user_dim, config.item_dim
    user = torch.randn(n, U, generator=g, device=device)
    items = torch.randn(n, S, F, generator=g, device=device)
    # The last feature is the sum of the others, like a precomputed score in production.
    items[:, :, -1] = items[:, :, :-1].sum(dim=-1)
    random_keys = torch.rand(n, S, generator=g, device=device)  # drawn in every case: streams stay aligned
    # Draws the founding generator does not make come after its own.
    if config.slate_min is not None and config.slate_min < T:
        # A list displays t items, t uniform in slate_min..T, and holds t + (S - T) candidates;
        # its missing candidates are padding (the last indices, zero features).
        shown = torch.randint(config.slate_min, T + 1, (n,), generator=g, device=device)
        mask = torch.arange(S, device=device) < (shown + (S - T)).unsqueeze(1)
        items = items * mask.unsqueeze(2)
        slate_mask = torch.arange(T, device=device) < shown.unsqueeze(1)
        utility = value_model.utility(user, items, mask)
    else:
        mask = torch.ones(n, S, dtype=torch.bool, device=device)
        slate_mask = torch.ones(n, T, dtype=torch.bool, device=device)
        utility = value_model.utility(user, items)
    initial_order = _initial_order(config, utility, mask, random_keys, g)
    slate = initial_order[:, :T]
    slate_utility = utility.gather(1, slate)
    if world is not None and world.interacts:  # what the user sees is the contextual utility
        effects = world.effects(gather_items(items, slate), slate_utility, slate_mask)
        slate_utility = world.contextual_utility(slate_utility, effects).to(utility.dtype)
    graded = None
    if thresholds is not None:
        graded = grades(slate_utility, thresholds).masked_fill(~slate_mask, 0.0)
    if config.labels == "graded":
        labels = graded
    else:
        labels = simulate_clicks(config.click_model, slate_utility, graded, slate_mask, config.eta, g)
    inputs = SlateBatch(user=user, items=items, mask=mask, positions=inverse_permutation(initial_order))
    return SlateData(inputs, slate, labels, utility, slate_mask)


def _calibration_draw(
    config: WorkloadConfig, value_model: HiddenValueModel, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """CALIBRATION_LISTS full lists from their own stream: (items [L, S, F], context-free utility [L, S])."""
    device = value_model.weight.device
    g = torch.Generator(device=device).manual_seed(_calibration_seed(seed))
    S, U, F = config.candidates, config.user_dim, config.item_dim
    user = torch.randn(CALIBRATION_LISTS, U, generator=g, device=device)
    items = torch.randn(CALIBRATION_LISTS, S, F, generator=g, device=device)
    items[:, :, -1] = items[:, :, :-1].sum(dim=-1)
    return items, value_model.utility(user, items)


def grade_thresholds(
    config: WorkloadConfig, value_model: HiddenValueModel, seed: int, world: World | None = None
) -> torch.Tensor:
    """Utility quantiles (GRADE_QUANTILES) of the world's candidates, from a calibration draw.

    The draw has its own stream, so the thresholds (and every split's grades) do not depend
    on the split sizes. In an interaction world (``world``, calibrated) the quantiles are those of the
    contextual utilities of a displayed slate: each calibration list's first T candidates (a random slate,
    since candidates are drawn alike) in that order.
    """
    items, utility = _calibration_draw(config, value_model, seed)
    if world is not None and world.interacts:
        T = config.slate_length
        shown, utility = items[:, :T], utility[:, :T]
        displayed = torch.ones_like(utility, dtype=torch.bool)
        utility = world.contextual_utility(utility, world.effects(shown, utility, displayed)).to(items.dtype)
    utility = utility.flatten()
    return torch.quantile(utility, torch.tensor(GRADE_QUANTILES, device=utility.device, dtype=utility.dtype))


def make_world(config: WorkloadConfig, value_model: HiddenValueModel, seed: int) -> World:
    """The config's world, its scale set from the calibration draw (the independent world needs no draw)."""
    world = world_of(config)
    if not world.interacts:
        return world
    return calibrated(world, _calibration_draw(config, value_model, seed)[1])


def needs_grades(config: WorkloadConfig) -> bool:
    return config.labels == "graded" or config.click_model != "best"


@dataclass(frozen=True)
class Workload:
    train: SlateData
    valid: SlateData
    test: SlateData
    value_model: HiddenValueModel | None = None  # None for real (LETOR) data
    source: str = "synthetic"
    info: dict | None = None  # what was loaded (files, fitted initial ranker); recorded with the results
    world: World | None = None  # how displayed items change each other's value (synthetic data only)

    def to(self, device: torch.device | str) -> Workload:
        """The same data on ``device`` (one copy per tensor)."""
        return Workload(
            train=self.train.to(device),
            valid=self.valid.to(device),
            test=self.test.to(device),
            value_model=self.value_model.to(device) if self.value_model is not None else None,
            source=self.source,
            info=self.info,
            world=self.world,
        )

    def oracle_scores(self, batch: SlateBatch) -> torch.Tensor:
        """[B, L] scores whose order is the best order the truth knows (the oracle's): the true utilities in the
        independent world; in an interaction world, the best order of the displayed slate (bench.worlds)."""
        if self.value_model is None:
            raise ValueError("this workload does not know the true utilities (real data)")
        if self.world is None or not self.world.interacts:
            return self.value_model.score(batch)
        return best_order_scores(self.world, self.value_model.score, batch, self.test.slate.shape[1])

    def describe(self) -> dict:
        """Sizes of what the cell actually used (goes into the record's ``data``)."""
        test = self.test
        return {
            "source": self.source,
            "train_lists": len(self.train),
            "valid_lists": len(self.valid),
            "test_lists": len(test),
            "user_dim": test.inputs.user.shape[1],
            "item_dim": test.inputs.items.shape[2],
            "candidates": test.inputs.items.shape[1],
            "slate_length": test.slate.shape[1],
            "mean_displayed": test.slate_mask.sum(dim=1).double().mean().item(),
            "mean_clicks_or_relevant": (test.labels > 0).sum(dim=1).double().mean().item(),
            **(self.world.describe() if self.world is not None and self.world.interacts else {}),
            **(self.info or {}),
        }


@torch.no_grad()
def generate(config: WorkloadConfig, seed: int, device: torch.device | str = "cpu") -> Workload:
    """All three splits, fully determined by ``config`` and ``seed``: drawn on the CPU, then moved to
    ``device`` once, so the data is bit-identical on every device."""
    return _generate_on_cpu(config, seed).to(device)


def _generate_on_cpu(config: WorkloadConfig, seed: int) -> Workload:
    g = torch.Generator(device=DATA_DEVICE).manual_seed(seed)
    value_model = HiddenValueModel.create(config.user_dim, config.item_dim, g)
    world = make_world(config, value_model, seed)
    thresholds = grade_thresholds(config, value_model, seed, world) if needs_grades(config) else None
    sizes = {
        "train": config.batch_size * config.batches,
        "valid": config.valid_slates,
        "test": config.test_slates,
    }
    splits = {s: generate_split(config, value_model, n, seed, s, thresholds, world) for s, n in sizes.items()}
    return Workload(value_model=value_model, world=world, **splits)


def digest(workload: Workload) -> str:
    """SHA-256 of every tensor of a workload, brought to the CPU: equal digests, bit-identical data."""
    hasher = hashlib.sha256()
    splits = [workload.train, workload.valid, workload.test]
    tensors = [getattr(split, f.name) for split in splits for f in fields(split) if f.name != "inputs"]
    tensors += [getattr(split.inputs, f.name) for split in splits for f in fields(split.inputs)]
    if workload.value_model is not None:
        tensors += [workload.value_model.weight, workload.value_model.bias]
    for tensor in tensors:
        hasher.update(str((tensor.dtype, tuple(tensor.shape))).encode())
        hasher.update(tensor.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return hasher.hexdigest()
