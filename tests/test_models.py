"""Every registered model, held to the model contract (adding a model adds its tests)."""

import pytest
import torch

import rerankers
from bench.config import WorkloadConfig
from bench.data import generate
from bench.losses import kl_divergence
from rerankers import SlateBatch

USER, ITEM, LENGTH = 4, 5, 6
SMALL = {"d_model": 16, "dim_feedforward": 32}
# Models whose scores are random draws by design: they are reproducible under a seed but not a
# function of the list, so the tests that compare two calls on reordered lists skip them.
STOCHASTIC = {"random"}


def fake_utility(batch: SlateBatch) -> torch.Tensor:
    """A stand-in for a workload's true utility: per item, ignores the order."""
    weights = torch.linspace(-1.0, 1.0, batch.items.shape[-1])
    return batch.items @ weights + batch.user.sum(dim=-1, keepdim=True)


def build(name: str, seed: int = 0, **options):
    torch.manual_seed(seed)
    spec = rerankers.get_spec(name)
    kwargs = {k: v for k, v in SMALL.items() if k in spec.options()}
    if spec.needs_utility:
        kwargs["utility_fn"] = fake_utility
    return rerankers.build_model(name, user_dim=USER, item_dim=ITEM, **{**kwargs, **options})


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


def reorder(batch: SlateBatch, order: torch.Tensor) -> SlateBatch:
    """The same lists with their items stored in another order (ranks travel with the items)."""
    return SlateBatch(batch.user, batch.items[:, order], batch.mask[:, order], batch.positions[:, order])


MODELS = rerankers.model_names()
EQUIVARIANT = [m for m in MODELS if rerankers.get_spec(m).permutation_equivariant]
TRAINABLE = [m for m in MODELS if rerankers.get_spec(m).trainable]
DETERMINISTIC = [m for m in MODELS if m not in STOCHASTIC]
ORDER_AWARE = [m for m in DETERMINISTIC if not rerankers.get_spec(m).permutation_equivariant]


def test_the_zoo_is_registered():
    expected = {"prm", "dlcm", "setrank", "setrank-init", "seq2slate", "gsf", "deepsets", "random", "initial", "oracle"}
    assert expected <= set(MODELS)
    assert {m for m in MODELS if not rerankers.get_spec(m).trainable} >= {"random", "initial", "oracle"}


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


@pytest.mark.parametrize("name", MODELS)
def test_variable_lengths_in_one_batch(name):
    """Lists of 1..L real items side by side, padding anywhere: real scores stay finite."""
    model = build(name).eval()
    batch = make_batch(batch=LENGTH, padded=0)
    lengths = torch.arange(1, LENGTH + 1)
    order = torch.randperm(LENGTH, generator=torch.Generator().manual_seed(3))
    mask = (torch.arange(LENGTH) < lengths[:, None])[:, order]
    ragged = SlateBatch(batch.user, batch.items, mask, batch.positions[:, order])
    scores = model(ragged)
    assert torch.isfinite(scores[mask]).all() and (scores[~mask] == float("-inf")).all()


@pytest.mark.parametrize("name", EQUIVARIANT)
def test_permutation_equivariance(name):
    model = build(name).eval()
    batch = make_batch(padded=0)
    order = torch.randperm(LENGTH, generator=torch.Generator().manual_seed(5))
    permuted = SlateBatch(batch.user, batch.items[:, order], batch.mask, batch.positions)
    torch.testing.assert_close(model(permuted), model(batch)[:, order], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", DETERMINISTIC)
def test_storage_order_does_not_matter(name):
    """Storing a list's items in another order, each with its rank and mask, permutes the scores."""
    model = build(name).eval()
    batch = make_batch()
    order = torch.randperm(LENGTH, generator=torch.Generator().manual_seed(6))
    torch.testing.assert_close(model(reorder(batch, order)), model(batch)[:, order], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", ORDER_AWARE)
def test_order_aware_models_use_the_initial_order(name):
    """Models that do not claim equivariance must react when the initial ranks change."""
    model = build(name).eval()
    batch = make_batch()
    reversed_ranks = SlateBatch(batch.user, batch.items, batch.mask, batch.positions.flip(1))
    assert not torch.allclose(model(batch)[batch.mask], model(reversed_ranks)[batch.mask])


@pytest.mark.parametrize(
    "name, options, equivariant",
    [
        ("prm", {"position_embedding": False}, True),
        ("prm", {"position_embedding": True}, False),
        ("setrank", {"rank_embedding": True}, False),
        ("setrank", {"rank_embedding": False}, True),
        ("setrank-init", {}, False),
    ],
)
def test_rank_embedding_switches(name, options, equivariant):
    model = build(name, **options).eval()
    batch = make_batch(padded=0)
    order = torch.randperm(LENGTH, generator=torch.Generator().manual_seed(5))
    permuted = SlateBatch(batch.user, batch.items[:, order], batch.mask, batch.positions)
    same = torch.allclose(model(permuted), model(batch)[:, order], rtol=1e-4, atol=1e-5)
    assert same == equivariant


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


@pytest.fixture(scope="module")
def tiny_train_set():
    return generate(WorkloadConfig(batch_size=64, batches=1, valid_slates=8, test_slates=8), seed=0).train


@pytest.mark.parametrize("name", TRAINABLE)
def test_a_tiny_training_run_lowers_the_loss(name, tiny_train_set):
    data = tiny_train_set
    torch.manual_seed(0)
    spec = rerankers.get_spec(name)
    model = rerankers.build_model(
        name, user_dim=7, item_dim=10, **{k: v for k, v in SMALL.items() if k in spec.options()}
    )
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)

    def loss() -> torch.Tensor:
        torch.manual_seed(1)  # the same dropout draws for the first and the last measurement
        return kl_divergence(model(data.inputs).gather(1, data.slate), data.clicks)

    model.train()
    before = loss().item()
    for _ in range(30):
        optimizer.zero_grad()
        loss().backward()
        optimizer.step()
    after = loss().item()
    assert after < before - 0.05, (before, after)


@pytest.mark.parametrize("name", TRAINABLE)
def test_options_are_documented_with_defaults(name):
    options = rerankers.get_spec(name).options()
    assert options, "sizes must be overridable"
    assert all(value is not None for value in options.values())
