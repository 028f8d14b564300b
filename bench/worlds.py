"""Worlds: how the value of a displayed slate depends on which items are shown together, and in what order.

Every world starts from the context-free utility u of each candidate (the hidden value model of bench/data.py)
and a latent topic per item, read off its features: topic = argmax of its first K features (K = ``topics``),
so a model can see it. An item's **contextual utility** at position p of a displayed order is

    v_p = u_p + sum over positions q of  B[item at p, item at q] * W[p, q]

with B a world's pairwise effect of one displayed item on another (in units of ``strength`` x ``scale``, scale
being the spread of u: its standard deviation over the world's calibration draw) and W its position kernel
(which positions an item feels). The **value of an order** is sum_p d(p) v_p with the DCG discount
d(p) = 1 / log2(p + 1) (positions from 1). The worlds:

- ``independent``: no effect (B = 0): v = u, the founding world, in which sorting by u is the best order.
- ``diversity`` (substitution): an item loses strength x scale for every item of its own topic displayed up to
  ``window`` positions above it (B = -1 for a pair of one topic, W[p, q] = 1 for q above p, p - q <= window):
  redundant items lose value, so similar items are best kept apart.
- ``complements``: an item gains strength x scale for every item of its partner topic (topics 2k and 2k + 1
  pair up; with an odd K the last topic has no partner) within ``window`` positions of it, above or below.
- ``decoy`` (context effect): an item gains strength x scale for every item of its own topic with a lower
  context-free utility (a similar but dominated item) within ``window`` positions of it; the decoy itself is
  unaffected.

The clicks and labels of bench/data.py come from the contextual utilities of the slate as displayed. The best
order of a displayed slate of t items is found exactly by trying all t! orders where t <= EXACT_MAX_LENGTH,
and approximated above that: greedily position by position, then by swaps and moves of single items while one
adds value (``optimum``); docs/workloads.md states the approximation's measured gap to exact.
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import ClassVar

import torch

from bench.config import WORLDS, WorkloadConfig
from bench.metrics import discounts, ranked
from rerankers import SlateBatch

EXACT_MAX_LENGTH = 7  # brute force over up to 7! = 5040 orders per slate; greedy + local search above
_CHUNK_VALUES = 1 << 22  # values held at once by the brute force and the local search (32 MiB of float64)
_IMPROVEMENT = 1e-9  # a local-search step must add more than float error


@dataclass(frozen=True)
class World:
    """The independent world: an item's value does not depend on the items shown with it."""

    name: ClassVar[str] = "independent"
    strength: float = 0.0  # size of one pairwise effect, in units of ``scale``
    topics: int = 4  # K: an item's topic is the argmax of its first K features
    window: int = 2  # how many positions away an item acts on another
    scale: float = 1.0  # standard deviation of the context-free utility (calibration draw)

    @property
    def interacts(self) -> bool:
        return self.name != "independent"

    def describe(self) -> dict:
        """What the record's ``data`` keeps of the world: its name and calibrated scale."""
        return {"world": self.name, "world_scale": self.scale}

    def kernel(self, length: int) -> torch.Tensor:
        """[T, T] float64 W: W[p, q] = 1 where the item at position q acts on the item at position p."""
        return torch.zeros(length, length, dtype=torch.float64)

    def pairs(self, topic: torch.Tensor, utility: torch.Tensor) -> torch.Tensor:
        """[N, T, T] bool or sign of the effect of item j on item i, before scaling and masking."""
        return torch.zeros(*topic.shape, topic.shape[1], dtype=torch.float64, device=topic.device)

    def effects(self, items: torch.Tensor, utility: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """[N, T, T] float64 B: B[n, i, j] = effect of displayed item j on item i (0 on the diagonal, padding)."""
        topic = item_topics(items, self.topics)
        effect = self.pairs(topic, utility).to(torch.float64) * (self.strength * self.scale)
        real = mask.unsqueeze(2) & mask.unsqueeze(1)
        real &= ~torch.eye(mask.shape[1], dtype=torch.bool, device=mask.device)
        return effect.masked_fill(~real, 0.0)

    def contextual_utility(
        self, utility: torch.Tensor, effects: torch.Tensor, order: torch.Tensor | None = None
    ) -> torch.Tensor:
        """[N, T] float64 v: contextual utility at each position of ``order`` (None: the displayed order)."""
        utility = utility.to(torch.float64)
        if order is not None:
            utility = utility.gather(1, order)
            effects = _reorder(effects, order)
        return utility + (effects * self.kernel(utility.shape[1]).to(effects.device)).sum(dim=2)


def _reorder(effects: torch.Tensor, order: torch.Tensor) -> torch.Tensor:
    """B[order[p], order[q]] at [p, q]."""
    length = order.shape[1]
    rows = effects.gather(1, order.unsqueeze(2).expand(-1, -1, length))
    return rows.gather(2, order.unsqueeze(1).expand(-1, length, -1))


def _window(length: int, width: int) -> torch.Tensor:
    distance = (torch.arange(length).unsqueeze(1) - torch.arange(length)).abs()
    return ((distance > 0) & (distance <= width)).to(torch.float64)


@dataclass(frozen=True)
class Diversity(World):
    """Substitution: each item of its own topic displayed up to ``window`` positions above an item takes
    strength x scale off its value."""

    name: ClassVar[str] = "diversity"

    def kernel(self, length: int) -> torch.Tensor:
        return _window(length, self.window).tril(diagonal=-1)  # q above p

    def pairs(self, topic: torch.Tensor, utility: torch.Tensor) -> torch.Tensor:
        return -(topic.unsqueeze(2) == topic.unsqueeze(1)).to(torch.float64)


@dataclass(frozen=True)
class Complements(World):
    """Complementarity: each item of the partner topic within ``window`` positions adds strength x scale."""

    name: ClassVar[str] = "complements"

    def kernel(self, length: int) -> torch.Tensor:
        return _window(length, self.window)

    def pairs(self, topic: torch.Tensor, utility: torch.Tensor) -> torch.Tensor:
        partner = topic ^ 1
        partner = partner.masked_fill(partner >= self.topics, -1)  # an odd K's last topic has no partner
        return partner.unsqueeze(2) == topic.unsqueeze(1)


@dataclass(frozen=True)
class Decoy(World):
    """Context effect: each dominated item of the same topic within ``window`` positions adds strength x scale."""

    name: ClassVar[str] = "decoy"

    def kernel(self, length: int) -> torch.Tensor:
        return _window(length, self.window)

    def pairs(self, topic: torch.Tensor, utility: torch.Tensor) -> torch.Tensor:
        same = topic.unsqueeze(2) == topic.unsqueeze(1)
        return same & (utility.unsqueeze(1) < utility.unsqueeze(2))  # item j dominated by item i


KINDS: dict[str, type[World]] = {kind.name: kind for kind in (World, Diversity, Complements, Decoy)}
assert tuple(KINDS) == tuple(WORLDS), "bench.config.WORLDS declares the worlds defined here, in this order"


def item_topics(items: torch.Tensor, topics: int) -> torch.Tensor:
    """[..., T] long: each item's topic, the index of the largest of its first ``topics`` features."""
    return items[..., :topics].argmax(dim=-1)


def world_of(config: WorkloadConfig) -> World:
    """The world a workload config names, with its parameters (the independent world takes none); its scale
    comes from the calibration draw (``calibrated``)."""
    kind = KINDS[config.world]
    if kind is World:
        return World()
    return kind(strength=config.world_strength, topics=config.world_topics, window=config.world_window)


def calibrated(world: World, utility: torch.Tensor) -> World:
    """The world with its scale: the standard deviation of the calibration draw's context-free utilities."""
    return replace(world, scale=utility.double().std().item()) if world.interacts else world


# --- the value of an order, and the best order --------------------------------------------------------------


def order_value(world: World, utility: torch.Tensor, effects: torch.Tensor, order: torch.Tensor, mask) -> torch.Tensor:
    """[N] float64: sum over positions of d(p) x contextual utility, for each slate in ``order``.

    ``order`` [N, T] lists displayed-slate indices best first, padding last (as ``bench.metrics.ranked`` does).
    """
    values = world.contextual_utility(utility, effects, order)
    real = mask.gather(1, order)
    return (values * discounts(values.shape[1], values.device)).masked_fill(~real, 0.0).sum(dim=1)


def optimum(world: World, utility: torch.Tensor, effects: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """[N, T] the best order of each displayed slate (padding last): sorting by utility in the independent world
    (exact), all orders up to EXACT_MAX_LENGTH items (exact); above, greedy position by position, then improved
    by swaps and moves of single items until none improves it (an approximation: ``local_search``)."""
    length = utility.shape[1]
    if not world.interacts:
        return ranked(utility, mask)
    if length <= EXACT_MAX_LENGTH:
        return brute_force(world, utility, effects, mask)
    return local_search(world, utility, effects, mask, greedy(world, utility, effects, mask))


@functools.cache
def _order_tables(world: World, length: int) -> tuple[torch.Tensor, ...]:
    """All orders of ``length`` items and what valuing them needs, independent of the data.

    orders [M, T]: item at each position (lexicographic: the displayed order first, so ties keep it);
    unary [M, T]: d(position of item i); pair [M, T*T]: d(pos_i) W[pos_i, pos_j] for items (i, j);
    prefix [M, T+1]: whether the first t positions hold items 0..t-1 (padding, the last items, stays last).
    """
    orders = torch.tensor(list(itertools.permutations(range(length))), dtype=torch.long)
    position = orders.argsort(dim=1)
    d = discounts(length, torch.device("cpu"))
    felt = d.unsqueeze(1) * world.kernel(length)
    pair = felt[position.unsqueeze(2), position.unsqueeze(1)].flatten(1)
    seen = orders.cummax(dim=1).values
    prefix = torch.cat((torch.ones(len(orders), 1, dtype=torch.bool), seen < torch.arange(1, length + 1)), dim=1)
    return orders, d[position], pair, prefix


def brute_force(world: World, utility: torch.Tensor, effects: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """[N, T] the exact best order: every order of each slate valued at once (one matmul per chunk of slates)."""
    n, length = utility.shape
    device = utility.device
    orders, unary, pair, prefix = (t.to(device) for t in _order_tables(world, length))
    shown = mask.sum(dim=1)
    best = torch.empty(n, dtype=torch.long, device=device)
    step = max(1, _CHUNK_VALUES // len(orders))
    for start in range(0, n, step):
        rows = slice(start, start + step)
        u = utility[rows].to(torch.float64).masked_fill(~mask[rows], 0.0)
        values = u @ unary.T + effects[rows].flatten(1) @ pair.T  # [chunk, M]
        valid = prefix[:, shown[rows]].T  # padding after every real item
        best[rows] = values.masked_fill(~valid, -math.inf).argmax(dim=1)  # first best: the earliest order
    return orders[best]


def greedy(world: World, utility: torch.Tensor, effects: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """[N, T] position by position, the item that adds most value given the items already placed above it
    (effects from items not yet placed are unknown to it); exact in the independent world, not in general."""
    n, length = utility.shape
    device = utility.device
    d = discounts(length, device)
    felt = d.unsqueeze(1) * world.kernel(length).to(device)  # felt[p, q] = d(p) W[p, q]
    u = utility.to(torch.float64)
    order = torch.zeros(n, length, dtype=torch.long, device=device)
    placed = torch.zeros(n, length, dtype=torch.bool, device=device)
    rows = torch.arange(n, device=device)
    lowest = torch.tensor(torch.finfo(torch.float64).min, dtype=torch.float64, device=device)
    for p in range(length):
        above = order[:, :p]  # [N, p]
        on_item = effects.gather(2, above.unsqueeze(1).expand(-1, length, -1))  # B[i, item at q]
        by_item = effects.gather(1, above.unsqueeze(2).expand(-1, -1, length)).transpose(1, 2)  # B[item at q, i]
        gain = d[p] * u + (on_item * felt[p, :p]).sum(dim=2) + (by_item * felt[:p, p]).sum(dim=2)
        fallback = lowest.masked_fill(placed, -math.inf)  # unplaced padding, once the real items run out
        choice = torch.where(mask & ~placed, gain, fallback).argmax(dim=1)
        order[:, p] = choice
        placed[rows, choice] = True
    return order


@functools.cache
def _moves(length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Every order one step from the identity: two positions swapped, or one item moved to another position.

    moves [M, T] (position p of the new order takes position moves[m, p] of the old one); reach [M]: the
    deepest position a move touches (a slate of t items may only make moves with reach < t)."""
    identity = list(range(length))
    moves = set()
    for a, b in itertools.permutations(identity, 2):
        moved = identity.copy()
        moved.insert(b, moved.pop(a))
        moves.add(tuple(moved))
        swapped = identity.copy()
        swapped[a], swapped[b] = swapped[b], swapped[a]
        moves.add(tuple(swapped))
    table = torch.tensor(sorted(moves), dtype=torch.long)
    changed = table != torch.arange(length)
    reach = torch.where(changed, torch.arange(length), -1).amax(dim=1)
    return table, reach


def local_search(
    world: World, utility: torch.Tensor, effects: torch.Tensor, mask: torch.Tensor, order: torch.Tensor
) -> torch.Tensor:
    """[N, T] ``order`` improved, in rounds, by the best swap or move of one item (``_moves``) while one adds
    value; every accepted step adds value, so it ends, at an order no single swap or move improves."""
    moves, reach = (t.to(order.device) for t in _moves(order.shape[1]))
    shown = mask.sum(dim=1)
    order = order.clone()
    value = order_value(world, utility, effects, order, mask)
    active = torch.arange(len(order), device=order.device)
    step = max(1, _CHUNK_VALUES // (len(moves) * order.shape[1] ** 2))
    while len(active):
        improved = []
        for rows in active.split(step):
            tried = order[rows].unsqueeze(1).expand(-1, len(moves), -1).gather(2, moves.expand(len(rows), -1, -1))
            values = order_value(
                world,
                utility[rows].repeat_interleave(len(moves), dim=0),
                effects[rows].repeat_interleave(len(moves), dim=0),
                tried.flatten(0, 1),
                mask[rows].repeat_interleave(len(moves), dim=0),
            ).view(len(rows), len(moves))
            values = values.masked_fill(reach.unsqueeze(0) >= shown[rows].unsqueeze(1), -math.inf)
            best, choice = values.max(dim=1)
            better = best > value[rows] + _IMPROVEMENT
            order[rows[better]] = tried[better, choice[better]]
            value[rows[better]] = best[better]
            improved.append(rows[better])
        active = torch.cat(improved)
    return order


@functools.cache
def _mean_discounts(world: World, length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """For t = 0..T real items: the mean discount of a position, and the mean of d(p) W[p, q] over p != q < t."""
    d = discounts(length, torch.device("cpu"))
    felt = d.unsqueeze(1) * world.kernel(length)
    unary, pair = torch.zeros(length + 1, dtype=torch.float64), torch.zeros(length + 1, dtype=torch.float64)
    for t in range(1, length + 1):
        unary[t] = d[:t].mean()
        if t > 1:
            pair[t] = felt[:t, :t].sum() / (t * (t - 1))  # the diagonal of W is 0
    return unary, pair


def random_order_value(world: World, utility: torch.Tensor, effects: torch.Tensor, mask) -> torch.Tensor:
    """[N] float64: the expected value of a uniformly random order of each slate's real items (closed form:
    each item is equally likely at every position, each pair at every two distinct positions)."""
    unary, pair = (t.to(utility.device) for t in _mean_discounts(world, utility.shape[1]))
    shown = mask.sum(dim=1)
    total = utility.to(torch.float64).masked_fill(~mask, 0.0).sum(dim=1)
    return unary[shown] * total + pair[shown] * effects.sum(dim=(1, 2))


# --- what the oracle and the metrics read -------------------------------------------------------------------


def best_order_scores(
    world: World, utility_of: Callable[[SlateBatch], torch.Tensor], batch: SlateBatch, slate_length: int
) -> torch.Tensor:
    """[B, S] scores that put each list's displayed items in their best order (``optimum``), above every
    undisplayed candidate. The displayed slate is the top of the initial order (``batch.positions``): its
    first ``slate_length`` items, fewer where the list holds fewer real candidates (variable slate lengths)."""
    utility = utility_of(batch)
    candidates = batch.mask.shape[1]
    shown = batch.mask.sum(dim=1) - (candidates - slate_length)
    slate = batch.positions.argsort(dim=1)[:, :slate_length]
    slate_mask = torch.arange(slate_length, device=slate.device) < shown.unsqueeze(1)
    items = batch.items.gather(1, slate.unsqueeze(2).expand(-1, -1, batch.items.shape[2]))
    displayed_utility = utility.gather(1, slate)
    effects = world.effects(items, displayed_utility, slate_mask)
    rank = optimum(world, displayed_utility, effects, slate_mask).argsort(dim=1)  # rank of each slate entry
    scores = -1.0 - batch.positions.to(utility.dtype)  # undisplayed: below every displayed item
    return scores.scatter(1, slate, (slate_length - rank).to(utility.dtype))


def value_metrics(world: World, slate_scores: torch.Tensor, items, utility, mask) -> dict[str, torch.Tensor]:
    """Per slate [N] float64: the value of the model's order of the displayed slate (``slate_value``), the best
    order's value minus it (``slate_regret``), and the best order's value minus a random order's expected
    value (``slate_headroom``, what re-ranking can earn). Ties in the scores are broken by display position."""
    effects = world.effects(items, utility, mask)
    value = order_value(world, utility, effects, ranked(slate_scores, mask), mask)
    best = order_value(world, utility, effects, optimum(world, utility, effects, mask), mask)
    chance = random_order_value(world, utility, effects, mask)
    return {"slate_value": value, "slate_regret": best - value, "slate_headroom": best - chance}
