"""Every registered model, held to the model contract (adding a model adds its tests)."""

import pytest
import torch

import rerankers
from rerankers import SlateBatch

USER, ITEM, LENGTH = 4, 5, 6
SMALL = {"d_model": 16, "dim_feedforward": 32}


def build(name: str, seed: int = 0):
    torch.manual_seed(seed)
    spec = rerankers.get_spec(name)
    options = {k: v for k, v in SMALL.items() if k in spec.options()}
    return rerankers.build_model(name, user_dim=USER, item_dim=ITEM, **options)


def make_batch(batch: int = 3, length: int = LENGTH, padded: int = 2, seed: int = 1) -> SlateBatch:
    g = torch.Generator().manual_seed(seed)
    mask = torch.ones(batch, length, dtype=torch.bool)
    mask[0, length - padded :] = False
    return SlateBatch(
        user=torch.randn(batch, USER, generator=g),
        items=torch.randn(batch, length, ITEM, generator=g),
        mask=mask,
        positions=torch.arange(length).expand(batch, length),
    )


MODELS = rerankers.model_names()
EQUIVARIANT = [m for m in MODELS if rerankers.get_spec(m).permutation_equivariant]
TRAINABLE = [m for m in MODELS if rerankers.get_spec(m).trainable]


@pytest.mark.parametrize("name", MODELS)
def test_shape_and_finite_real_scores(name):
    batch = make_batch()
    scores = build(name).eval()(batch)
    assert scores.shape == (3, LENGTH)
    assert torch.isfinite(scores[batch.mask]).all()


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("mode", ["train", "eval"])
def test_padding_never_outranks_and_never_matters(name, mode):
    model = build(name).train(mode == "train")
    batch = make_batch()
    changed_items = batch.items.clone()
    changed_items[~batch.mask] = 100.0
    changed = SlateBatch(batch.user, changed_items, batch.mask, batch.positions)
    torch.manual_seed(0)
    scores = model(batch)
    torch.manual_seed(0)  # same dropout draws in train mode
    scores_changed = model(changed)
    assert (scores[~batch.mask] == float("-inf")).all()
    torch.testing.assert_close(scores[batch.mask], scores_changed[batch.mask])


@pytest.mark.parametrize("name", EQUIVARIANT)
def test_permutation_equivariance(name):
    model = build(name).eval()
    batch = make_batch(padded=0)
    order = torch.randperm(LENGTH, generator=torch.Generator().manual_seed(5))
    permuted = SlateBatch(batch.user, batch.items[:, order], batch.mask, batch.positions)
    torch.testing.assert_close(model(permuted), model(batch)[:, order], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", MODELS)
def test_same_seed_same_model(name):
    batch = make_batch()
    a, b = build(name, seed=7).eval()(batch), build(name, seed=7).eval()(batch)
    assert torch.equal(a, b)


@pytest.mark.parametrize("name", TRAINABLE)
def test_gradients_reach_every_parameter(name):
    model = build(name).train()
    batch = make_batch()
    scores = model(batch)
    scores[batch.mask].sum().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not torch.any(p.grad != 0)]
    assert not missing, f"no gradient reached {missing}"
