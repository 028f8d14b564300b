import numpy as np
import pytest
import torch

from bench.config import WorkloadConfig
from bench.data import generate, inverse_permutation

CONFIG = WorkloadConfig(
    batch_size=32, batches=4, candidates=8, slate_length=3, user_dim=5, item_dim=6, valid_slates=40, test_slates=50
)


@pytest.fixture(scope="module")
def workload():
    return generate(CONFIG, seed=3)


def test_shapes(workload):
    train = workload.train
    assert len(train) == 128 and len(workload.valid) == 40 and len(workload.test) == 50
    assert train.inputs.user.shape == (128, 5)
    assert train.inputs.items.shape == (128, 8, 6)
    assert train.inputs.mask.all()
    assert train.slate.shape == (128, 3) and train.clicks.shape == (128, 3)
    assert train.utility.shape == (128, 8)
    assert torch.equal(train.inputs.positions[0].sort().values, torch.arange(8))


def test_slate_is_the_top_of_the_initial_order(workload):
    data = workload.train
    assert torch.equal(data.inputs.positions.gather(1, data.slate), torch.arange(3).expand(len(data), 3))


def test_same_seed_same_data_other_seed_other_data(workload):
    again = generate(CONFIG, seed=3)
    other = generate(CONFIG, seed=4)
    for split in ("train", "valid", "test"):
        a, b = getattr(workload, split), getattr(again, split)
        assert torch.equal(a.inputs.items, b.inputs.items)
        assert torch.equal(a.slate, b.slate) and torch.equal(a.clicks, b.clicks)
    assert not torch.equal(workload.test.inputs.items, other.test.inputs.items)


def test_test_split_does_not_depend_on_training_size(workload):
    bigger = generate(WorkloadConfig(**{**CONFIG.__dict__, "batches": 9}), seed=3)
    assert torch.equal(bigger.test.inputs.items, workload.test.inputs.items)
    assert torch.equal(bigger.test.clicks, workload.test.clicks)


def test_splits_are_disjoint(workload):
    users = [tuple(u) for s in ("train", "valid", "test") for u in getattr(workload, s).inputs.user.tolist()]
    assert len(users) == len(set(users))


def test_last_feature_is_sum_of_the_others(workload):
    items = workload.train.inputs.items
    torch.testing.assert_close(items[..., -1], items[..., :-1].sum(-1))


def test_slate_is_distinct_candidates(workload):
    slate = workload.train.slate
    assert all(len(set(row)) == 3 for row in slate.tolist())
    assert slate.min() >= 0 and slate.max() < 8


def test_click_is_the_displayed_item_of_highest_utility(workload):
    data = workload.test
    for row in range(len(data)):
        shown = data.slate[row].tolist()
        utilities = [data.utility[row, c].item() for c in shown]
        assert data.clicks[row].tolist() == [1.0 if u == max(utilities) else 0.0 for u in utilities]


def test_utility_follows_the_hidden_value_model(workload):
    """Recompute utilities one user at a time with numpy, independently of the torch code."""
    vm = workload.value_model
    weight, bias = vm.weight.numpy(), vm.bias.numpy()
    data = workload.valid
    for row in range(5):
        user = data.inputs.user[row].numpy()
        items = data.inputs.items[row].numpy()
        summary = np.concatenate([user, items.mean(0), items.std(0, ddof=1), items.max(0)])
        coefficients = weight @ summary + bias
        np.testing.assert_allclose(data.utility[row].numpy(), items @ coefficients, rtol=1e-4, atol=1e-4)


def test_value_model_is_frozen_and_shared_across_splits():
    a = generate(CONFIG, seed=3)
    b = generate(WorkloadConfig(**{**CONFIG.__dict__, "test_slates": 7}), seed=3)
    assert torch.equal(a.value_model.weight, b.value_model.weight)
    assert not a.value_model.weight.requires_grad


def test_inverse_permutation_equals_argsort():
    order = torch.rand(500, 13, generator=torch.Generator().manual_seed(0)).argsort(dim=1)
    inverse = inverse_permutation(order)
    assert torch.equal(inverse, order.argsort(dim=1))
    assert torch.equal(order.gather(1, inverse), torch.arange(13).expand(500, 13))
