"""Worlds where the list matters (bench/worlds.py): the stories, the best order, the metrics, the keys."""

import itertools
import json
import math
import re
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

import rerankers
from bench.cell import evaluate
from bench.cli import app
from bench.config import WORLDS, CellConfig, ConfigError, WorkloadConfig, validate
from bench.data import generate, grade_thresholds, grades
from bench.metrics import ranked
from bench.records import load_records
from bench.worlds import (
    KINDS,
    World,
    brute_force,
    greedy,
    local_search,
    optimum,
    order_value,
    random_order_value,
    value_metrics,
)

INTERACTION_WORLDS = tuple(WORLDS)[1:]  # every world but the independent one
REFERENCE = Path(__file__).resolve().parents[1] / "results" / "reference"


# --- a slow reference: each world's story, item by item, in plain Python ---------------------------------------


def partner(topic: int, topics: int) -> int | None:
    other = topic ^ 1
    return other if other < topics else None


def story_utilities(world: World, utility: list[float], topic: list[int], order: list[int]) -> list[float]:
    """The contextual utility of each item ``order`` shows, in that order, as docs/workloads.md tells it."""
    effect = world.strength * world.scale
    values = []
    for p, i in enumerate(order):
        value = utility[i]
        for q, j in enumerate(order):
            if q == p or abs(p - q) > world.window:
                continue
            if world.name == "diversity" and q < p and topic[j] == topic[i]:
                value -= effect  # a redundant item shown just above
            if world.name == "complements" and topic[j] == partner(topic[i], world.topics):
                value += effect  # its complement shown nearby
            if world.name == "decoy" and topic[j] == topic[i] and utility[j] < utility[i]:
                value += effect  # a similar but dominated item shown nearby
        values.append(value)
    return values


def story_value(world: World, utility: list[float], topic: list[int], order: list[int]) -> float:
    """The value of showing the items ``order`` names, in that order: each position's discounted utility."""
    return sum(v / math.log2(p + 2) for p, v in enumerate(story_utilities(world, utility, topic, order)))


def slates(n: int, length: int, seed: int, variable: bool = True):
    """Random displayed slates: features [n, T, 6], utilities [n, T], a mask of real items (a prefix)."""
    g = torch.Generator().manual_seed(seed)
    items = torch.randn(n, length, 6, generator=g)
    utility = torch.randn(n, length, generator=g) * 2
    shown = torch.randint(2 if variable else length, length + 1, (n,), generator=g)
    mask = torch.arange(length) < shown.unsqueeze(1)
    return items, utility.masked_fill(~mask, 0.0), mask


def topics_of(items: torch.Tensor, topics: int) -> list[list[int]]:
    return [[max(range(topics), key=lambda k: float(item[k])) for item in row] for row in items]


def make_world(name: str, **changes) -> World:
    return KINDS[name](**{"strength": 1.0, "topics": 3, "window": 2, "scale": 0.7, **changes})


def random_orders(mask: torch.Tensor, seed: int) -> torch.Tensor:
    """[n, T] a random order of each slate's real items, its padding last (in place)."""
    g = torch.Generator().manual_seed(seed)
    length = mask.shape[1]
    rows = []
    for shown in mask.sum(dim=1).tolist():
        rows.append(torch.randperm(shown, generator=g).tolist() + list(range(shown, length)))
    return torch.tensor(rows)


def best_story_value(world: World, utility: list[float], topic: list[int], shown: int) -> float:
    return max(story_value(world, utility, topic, list(order)) for order in itertools.permutations(range(shown)))


@pytest.mark.parametrize("name", INTERACTION_WORLDS)
@pytest.mark.parametrize("window", [1, 2])
def test_the_value_of_an_order_follows_the_story(name, window):
    world = make_world(name, window=window)
    items, utility, mask = slates(40, 5, seed=1)
    order = random_orders(mask, seed=2)
    topic = topics_of(items, world.topics)
    expected = [
        story_value(world, utility[n].tolist(), topic[n], order[n, : int(mask[n].sum())].tolist()) for n in range(40)
    ]
    got = order_value(world, utility, world.effects(items, utility, mask), order, mask)
    torch.testing.assert_close(got, torch.tensor(expected, dtype=torch.float64))


@pytest.mark.parametrize("name", INTERACTION_WORLDS)
@pytest.mark.parametrize("length", [3, 5])
def test_the_exact_optimum_is_the_best_of_every_order(name, length):
    world = make_world(name)
    items, utility, mask = slates(30, length, seed=length)
    effects = world.effects(items, utility, mask)
    order = optimum(world, utility, effects, mask)
    assert torch.equal(order, brute_force(world, utility, effects, mask))  # T <= EXACT_MAX_LENGTH: exact
    assert torch.equal(order.sort(dim=1).values, torch.arange(length).expand(30, length))  # a permutation
    shown = mask.sum(dim=1)
    assert all(sorted(order[n, : shown[n]].tolist()) == list(range(shown[n])) for n in range(30))  # padding last
    topic = topics_of(items, world.topics)
    best = [best_story_value(world, utility[n].tolist(), topic[n], int(shown[n])) for n in range(30)]
    torch.testing.assert_close(order_value(world, utility, effects, order, mask), torch.tensor(best).double())


def test_in_the_independent_world_the_best_order_sorts_by_utility():
    items, utility, mask = slates(200, 6, seed=3)
    effects = World().effects(items, utility, mask)
    assert not effects.any()
    by_utility = ranked(utility, mask)
    assert torch.equal(optimum(World(), utility, effects, mask), by_utility)
    # every search finds it too, where nothing interacts
    for searched in (
        brute_force(World(), utility, effects, mask),
        greedy(World(), utility, effects, mask),
        local_search(World(), utility, effects, mask, random_orders(mask, seed=4)),
    ):
        torch.testing.assert_close(
            order_value(World(), utility, effects, searched, mask),
            order_value(World(), utility, effects, by_utility, mask),
        )
    assert torch.equal(brute_force(World(), utility, effects, mask), by_utility)


@pytest.mark.parametrize("name", INTERACTION_WORLDS)
def test_the_approximation_lies_between_greedy_and_exact(name):
    world = make_world(name)
    items, utility, mask = slates(300, 6, seed=5)
    effects = world.effects(items, utility, mask)
    first = greedy(world, utility, effects, mask)
    exact, approximate, greedy_value = (
        order_value(world, utility, effects, order, mask)
        for order in (
            brute_force(world, utility, effects, mask),
            local_search(world, utility, effects, mask, first),
            first,
        )
    )
    assert (greedy_value <= approximate + 1e-9).all() and (approximate <= exact + 1e-9).all()
    assert (approximate > greedy_value + 1e-6).any()  # the local search does improve on greedy somewhere


@pytest.mark.parametrize("name", WORLDS)
def test_a_random_orders_expected_value_is_the_mean_over_every_order(name):
    world = make_world(name) if name != "independent" else World()
    items, utility, mask = slates(20, 5, seed=6)
    topic = topics_of(items, world.topics)
    expected = []
    for n in range(20):
        shown = int(mask[n].sum())
        orders = list(itertools.permutations(range(shown)))
        expected.append(sum(story_value(world, utility[n].tolist(), topic[n], list(o)) for o in orders) / len(orders))
    got = random_order_value(world, utility, world.effects(items, utility, mask), mask)
    torch.testing.assert_close(got, torch.tensor(expected, dtype=torch.float64))


# --- the data a world draws ------------------------------------------------------------------------------------

SMALL = WorkloadConfig(batch_size=32, batches=2, valid_slates=32, test_slates=2048)


@pytest.fixture(scope="module")
def independent():
    return generate(SMALL, seed=0)


@pytest.mark.parametrize("name", INTERACTION_WORLDS)
def test_a_world_changes_the_labels_and_nothing_else(independent, name):
    world = generate(replace(SMALL, world=name), seed=0)
    for split in ("train", "valid", "test"):
        a, b = getattr(independent, split), getattr(world, split)
        assert torch.equal(a.inputs.items, b.inputs.items) and torch.equal(a.inputs.positions, b.inputs.positions)
        assert torch.equal(a.inputs.user, b.inputs.user) and torch.equal(a.slate, b.slate)
        assert torch.equal(a.utility, b.utility)  # the context-free utility of every candidate
    assert not torch.equal(independent.test.labels, world.test.labels)
    assert independent.world == World() and world.world.name == name and world.world.scale > 0


@pytest.mark.parametrize("name", INTERACTION_WORLDS)
def test_at_strength_zero_a_world_draws_the_independent_worlds_clicks(independent, name):
    world = generate(replace(SMALL, world=name, world_strength=0.0), seed=0)
    assert torch.equal(independent.test.labels, world.test.labels)


@pytest.mark.parametrize("name", INTERACTION_WORLDS)
def test_the_click_is_on_the_item_of_highest_contextual_utility_as_displayed(name):
    workload = generate(replace(SMALL, world=name, test_slates=200), seed=1)
    test, world = workload.test, workload.world
    topic = topics_of(test.slate_items, world.topics)
    for n in range(200):
        shown = story_utilities(world, test.slate_utility[n].tolist(), topic[n], list(range(5)))
        best = max(range(5), key=lambda p: shown[p])
        assert test.labels[n].tolist() == [1.0 if p == best else 0.0 for p in range(5)], n


def test_graded_labels_grade_the_contextual_utility():
    workload = generate(replace(SMALL, world="decoy", labels="graded", slate_min=3, test_slates=300), seed=2)
    test, world = workload.test, workload.world
    thresholds = grade_thresholds(replace(SMALL, world="decoy"), workload.value_model, 2, world)
    effects = world.effects(test.slate_items, test.slate_utility, test.slate_mask)
    contextual = world.contextual_utility(test.slate_utility, effects).float()
    expected = grades(contextual, thresholds).masked_fill(~test.slate_mask, 0.0)
    assert torch.equal(test.labels, expected)
    assert not torch.equal(test.labels, grades(test.slate_utility, thresholds).masked_fill(~test.slate_mask, 0.0))


@pytest.mark.parametrize("name", WORLDS)
def test_the_oracle_puts_each_displayed_slate_in_its_best_order(name):
    workload = generate(replace(SMALL, world=name, slate_min=2, test_slates=500), seed=3)
    test = workload.test
    scores = workload.oracle_scores(test.inputs)
    metrics, _ = evaluate(scores, test, True, workload.world)
    assert abs(metrics["slate_regret"]) < 1e-9 and abs(metrics["slate_regret_share"]) < 1e-9
    displayed = torch.zeros_like(test.inputs.mask).scatter(1, test.slate, test.slate_mask)
    lowest_shown = scores.masked_fill(~displayed, math.inf).amin(dim=1)
    highest_hidden = scores.masked_fill(displayed | ~test.inputs.mask, -math.inf).amax(dim=1)
    if name != "independent":  # it ranks the displayed slate first (the independent oracle ranks by utility)
        assert (lowest_shown > highest_hidden).all()


# --- the world property: where the list matters, a context-free order loses value ------------------------------

# The least share of the headroom (the best order's gain over a random order) that ordering by the context-free
# utility must lose at the default strength. Measured at this size (seed 0, 2048 test slates): diversity 0.38,
# complements 0.65, decoy 0.32.
CONTEXT_FREE_LOSS = 0.15


def context_free_loss(config: WorkloadConfig) -> tuple[float, float]:
    """(slate_regret_share, the largest per-slate regret) of scoring each item by its context-free utility."""
    workload = generate(config, seed=0)
    test = workload.test
    metrics, _ = evaluate(test.utility, test, True, workload.world)
    per_slate = value_metrics(workload.world, test.slate_utility, test.slate_items, test.slate_utility, test.slate_mask)
    return metrics["slate_regret_share"], per_slate["slate_regret"].max().item()


@pytest.mark.parametrize("name", INTERACTION_WORLDS)
@pytest.mark.parametrize(
    "strength",
    [1.0, pytest.param(0.0, marks=pytest.mark.xfail(strict=True, reason="at strength 0 the list does not matter"))],
)
def test_where_the_list_matters_a_context_free_order_loses_value(name, strength):
    share, _ = context_free_loss(replace(SMALL, world=name, world_strength=strength))
    assert share >= CONTEXT_FREE_LOSS


def test_in_the_independent_world_a_context_free_order_loses_nothing():
    share, worst = context_free_loss(SMALL)
    assert share == pytest.approx(0.0, abs=1e-12) and worst < 1e-9


# --- configuration and keys ------------------------------------------------------------------------------------


def test_the_default_world_keeps_every_earlier_key():
    cell = CellConfig(model="mlp", cpu_dropout="torch")  # the CPU dropout as records of that time trained
    assert cell.workload.world == "independent"
    assert cell.key() == "26b08de29cdd27b0"  # the key this cell had before worlds existed (tests/test_dropout.py)
    keys = {cell.key()}
    for changes in (
        {"world": "diversity"},
        {"world": "complements"},
        {"world": "decoy"},
        {"world": "decoy", "world_strength": 0.5},
        {"world": "decoy", "world_topics": 3},
        {"world": "decoy", "world_window": 1},
    ):
        other = replace(cell, workload=replace(cell.workload, **changes))
        keys.add(other.key())
        assert other.data_key() != cell.data_key()
    assert len(keys) == 7


def test_every_reference_record_keeps_its_keys():
    paths = sorted(REFERENCE.glob("**/records.jsonl"))
    assert len(paths) >= 10
    for path in paths:
        for line in path.read_text().splitlines():
            record = json.loads(line)
            cell = CellConfig.from_dict(record["config"])
            assert (cell.key(), cell.data_key()) == (record["key"], record["data_key"]), path


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"world": "diversty"}, "did you mean 'diversity'"),
        ({"world_strength": 2.0}, "world-strength applies to the interaction worlds only"),
        ({"world_window": 3}, "world-window applies to the interaction worlds only"),
        ({"world": "decoy", "world_topics": 10}, "world-topics (10) must be at most item-dim - 1 (9)"),
        ({"world": "decoy", "world_strength": -1.0}, "world-strength must be at least 0"),
        ({"world": "decoy", "data": "letor", "data_path": "x"}, "world applies to --data synthetic only"),
    ],
)
def test_bad_world_settings_are_config_errors(smoke_cell, changes, message):
    cell = smoke_cell("mlp")
    with pytest.raises(ConfigError, match=re.escape(message)):
        validate(replace(cell, workload=replace(cell.workload, **changes)))


def test_bad_world_option_is_one_error_line(tmp_path):
    result = CliRunner().invoke(app, ["run", "--profile", "smoke", "--out", str(tmp_path), "--world-topics", "1"])
    assert result.exit_code == 2 and "world-topics must be at least 2" in result.stderr
    assert not any(tmp_path.iterdir())


# --- every model in every world --------------------------------------------------------------------------------


def test_every_model_runs_in_every_world(tmp_path):
    args = ["run", "--models", "all", "--profile", "smoke", "--executor", "inline", "--out", tmp_path]
    args += ["--run-id", "worlds", "--world", ",".join(INTERACTION_WORLDS)]
    args += ["--batches", "2", "--valid-slates", "64", "--test-slates", "128"]
    result = CliRunner().invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    records = load_records(tmp_path / "worlds" / "records.jsonl")
    cells = {(r["config"]["workload"]["world"], r["model"]): r for r in records}
    assert sorted(cells) == sorted(itertools.product(INTERACTION_WORLDS, rerankers.model_names()))
    for (world, model), record in cells.items():
        assert record["status"] == "ok", (world, model, record["error"])
        metrics = record["metrics"]
        assert {"slate_value", "slate_regret", "slate_regret_share"} <= set(metrics), (world, model)
        assert record["data"]["world"] == world and record["data"]["world_scale"] > 0
        cell = CellConfig.from_dict(record["config"])
        independent = replace(cell, workload=replace(cell.workload, world="independent"))
        assert record["key"] == cell.key() != independent.key()
        if model == "oracle":
            assert abs(metrics["slate_regret"]) < 1e-9
        else:
            assert metrics["slate_regret"] >= -1e-9  # no order beats the exact optimum (T = 5)
    report = (tmp_path / "worlds" / "report.md").read_text()
    assert "## Across world" in report and "slate regret share" in report


@pytest.mark.parametrize("name", INTERACTION_WORLDS)
def test_the_oracle_stays_permutation_equivariant(name):
    """Registered as such: shuffling the candidates (their initial ranks with them) shuffles its scores."""
    workload = generate(replace(SMALL, world=name, test_slates=200), seed=4)
    batch = workload.test.inputs
    shuffle = torch.randperm(batch.mask.shape[1], generator=torch.Generator().manual_seed(0))
    shuffled = rerankers.SlateBatch(
        batch.user, batch.items[:, shuffle], batch.mask[:, shuffle], batch.positions[:, shuffle]
    )
    torch.testing.assert_close(workload.oracle_scores(shuffled), workload.oracle_scores(batch)[:, shuffle])
