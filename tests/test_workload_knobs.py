"""Synthetic workload knobs: founding data kept bit for bit, slate lengths, initial ranker, clicks, grades."""

from dataclasses import replace

import numpy as np
import pytest
import torch

from bench.config import ConfigError, WorkloadConfig, validate
from bench.data import (
    CLICK_NOISE,
    GRADE_QUANTILES,
    MAX_GRADE,
    _split_seed,
    attractiveness,
    generate,
    grade_thresholds,
    grades,
)

BASE = WorkloadConfig(
    batch_size=64, batches=2, candidates=8, slate_length=5, user_dim=5, item_dim=6, valid_slates=64, test_slates=4000
)


def make(**changes):
    return generate(replace(BASE, **changes), seed=1).test


def test_default_knobs_replay_the_founding_draws_bit_for_bit():
    data = generate(BASE, seed=1).test
    n, S, T = 4000, 8, 5
    g = torch.Generator().manual_seed(_split_seed(1, "test"))
    user = torch.randn(n, 5, generator=g)
    items = torch.randn(n, S, 6, generator=g)
    items[:, :, -1] = items[:, :, :-1].sum(dim=-1)
    order = torch.rand(n, S, generator=g).argsort(dim=1)
    assert torch.equal(data.inputs.user, user) and torch.equal(data.inputs.items, items)
    assert torch.equal(data.slate, order[:, :T]) and torch.equal(data.inputs.positions, order.argsort(dim=1))
    best = data.utility.gather(1, data.slate).argmax(dim=1)
    assert torch.equal(data.labels, torch.nn.functional.one_hot(best, T).float())
    assert data.slate_mask.all() and data.inputs.mask.all()


def test_variable_slate_lengths_are_padded_and_masked():
    data = make(slate_min=2)
    shown = data.slate_mask.sum(dim=1)
    assert set(shown.tolist()) == {2, 3, 4, 5}
    # the displayed items come first; each list keeps the S - T undisplayed candidates of a full list
    assert torch.equal(data.slate_mask, torch.arange(5) < shown.unsqueeze(1))
    assert torch.equal(data.inputs.mask.sum(dim=1), shown + 3)
    assert (data.inputs.items[~data.inputs.mask] == 0).all()
    real = data.inputs.mask.sum(dim=1, keepdim=True)
    assert (data.inputs.positions[~data.inputs.mask] >= real.expand_as(data.inputs.mask)[~data.inputs.mask]).all()
    assert (data.labels[~data.slate_mask] == 0).all() and (data.labels.sum(dim=1) == 1).all()
    # the founding rule clicks the best *displayed* item
    shown_utility = data.slate_utility.masked_fill(~data.slate_mask, -float("inf"))
    assert torch.equal(data.labels.argmax(dim=1), shown_utility.argmax(dim=1))


def test_variable_lengths_utility_summarises_real_candidates_only():
    data = generate(replace(BASE, slate_min=1), seed=1)
    vm, test = data.value_model, data.test
    weight, bias = vm.weight.numpy(), vm.bias.numpy()
    for row in range(6):
        real = test.inputs.mask[row].numpy()
        items = test.inputs.items[row].numpy()[real]
        summary = np.concatenate([test.inputs.user[row].numpy(), items.mean(0), items.std(0, ddof=1), items.max(0)])
        expected = items @ (weight @ summary + bias)
        np.testing.assert_allclose(test.utility[row].numpy()[real], expected, rtol=1e-4, atol=1e-4)


def top_is_best(data):
    return (data.slate_utility[:, 0] == data.utility.amax(dim=1)).double().mean().item()


def test_initial_noise_zero_orders_by_true_utility():
    data = make(initial_noise=0.0)
    by_utility = data.utility.argsort(dim=1, descending=True)
    assert torch.equal(data.slate, by_utility[:, :5])
    assert torch.equal(data.inputs.positions.gather(1, data.slate), torch.arange(5).expand(4000, 5))


def test_initial_noise_interpolates_between_perfect_and_random():
    perfect, informative, noisy, random = (top_is_best(make(initial_noise=s)) for s in (0.0, 0.5, 2.0, None))
    assert perfect == 1.0 > informative > noisy > random
    assert random == pytest.approx(1 / 8, abs=0.03)


def test_grades_follow_the_world_utility_quantiles():
    config = replace(BASE, labels="graded")
    world = generate(config, seed=1)
    thresholds = grade_thresholds(config, world.value_model, seed=1)
    data = world.test
    assert set(data.labels.unique().tolist()) <= set(range(MAX_GRADE + 1))
    assert torch.equal(data.labels, grades(data.slate_utility, thresholds))
    shares = [(grades(data.utility, thresholds) == g).double().mean().item() for g in range(MAX_GRADE + 1)]
    expected = np.diff([0.0, *GRADE_QUANTILES, 1.0])
    np.testing.assert_allclose(shares, expected, atol=0.03)
    # the test split does not depend on the training size
    bigger = generate(replace(config, batches=5), seed=1).test
    assert torch.equal(bigger.labels, data.labels)


@pytest.mark.parametrize("click_model", ["position-biased", "cascade", "multi-click"])
def test_stochastic_clicks_only_on_displayed_items(click_model):
    data = make(click_model=click_model, slate_min=2)
    assert set(data.labels.unique().tolist()) <= {0.0, 1.0}
    assert (data.labels[~data.slate_mask] == 0).all()
    per_slate = data.labels.sum(dim=1)
    assert (per_slate == 0).any()  # some slates go unclicked
    if click_model == "cascade":
        assert per_slate.max() == 1
    else:
        assert per_slate.max() >= 2


def click_rate_by_rank(data):
    return data.labels.mean(dim=0).tolist()


def test_position_bias_follows_one_over_rank_to_the_eta():
    # A random initial order makes attractiveness independent of the rank, so the
    # click-through rate at rank r is proportional to 1 / r^eta.
    config = replace(BASE, click_model="position-biased", eta=1.0, test_slates=40000)
    rates = click_rate_by_rank(generate(config, seed=2).test)
    ratios = [rates[r] / rates[0] for r in range(5)]
    np.testing.assert_allclose(ratios, [1 / (r + 1) for r in range(5)], rtol=0.08)
    flat = click_rate_by_rank(generate(replace(config, eta=0.0), seed=2).test)
    np.testing.assert_allclose(flat, [np.mean(flat)] * 5, rtol=0.06)


def test_cascade_clicks_the_first_attractive_item():
    config = replace(BASE, click_model="cascade", test_slates=40000)
    world = generate(config, seed=3)
    thresholds = grade_thresholds(config, world.value_model, seed=3)
    data = world.test
    grade = grades(data.slate_utility, thresholds)
    # rank 1 is always examined: its click rate per grade is the attractiveness
    for g in range(MAX_GRADE + 1):
        rows = grade[:, 0] == g
        expected = attractiveness(torch.tensor(float(g))).item()  # a float: pytest.approx can't take a 0-d tensor
        assert data.labels[rows, 0].mean().item() == pytest.approx(expected, abs=0.03)
    # the rate at rank 2 is lower: only users who skipped rank 1 get there
    assert data.labels[:, 1].mean() < data.labels[:, 0].mean()
    assert attractiveness(torch.tensor(0.0)).item() == pytest.approx(CLICK_NOISE)


def test_graded_labels_and_informative_order_work_together_with_variable_lengths():
    data = make(labels="graded", initial_noise=0.3, slate_min=3)
    assert (data.labels[~data.slate_mask] == 0).all()
    # an informative initial order puts better grades higher on average
    rate = (data.labels * data.slate_mask).sum(dim=0) / data.slate_mask.sum(dim=0)
    assert rate[0] > rate[-1]


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"slate_min": 0}, "slate-min must be at least 1"),
        ({"slate_min": 9}, "slate-min must be between 1 and the slate length"),
        ({"initial_noise": -1.0}, "initial-noise must be at least 0"),
        ({"initial_noise": float("inf")}, "initial-noise must be finite"),
        ({"click_model": "cascde"}, "did you mean 'cascade'"),
        ({"labels": "grades"}, "did you mean 'graded'"),
        ({"eta": -0.5}, "eta must be at least 0"),
        ({"data": "letor"}, "needs --data-path"),
        ({"data_path": "x"}, "data-path applies to --data letor only"),
        ({"data": "letor", "data_path": "x", "initial_noise": 0.5}, "initial-noise applies to --data synthetic only"),
        ({"data": "letor", "data_path": "x", "initial_ranker": "bm25"}, "initial-ranker must be"),
    ],
)
def test_bad_knobs_are_config_errors(smoke_cell, changes, message):
    cell = smoke_cell()
    with pytest.raises(ConfigError, match=message):
        validate(replace(cell, workload=replace(cell.workload, **changes)))
