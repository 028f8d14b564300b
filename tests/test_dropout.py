"""The CPU dropout built from random bits: same distribution and scaling as nn.Dropout."""

import math

import pytest
import torch
from torch import nn

import rerankers
from rerankers import dropout as dropout_module
from rerankers.dropout import LANES, Dropout, lane_drop_count, with_fast_dropout


@pytest.fixture(autouse=True)
def bits_path(monkeypatch):
    # The bit path is taken where torch's own CPU Bernoulli is serial (not on Intel with MKL);
    # these tests check it whatever CPU runs them.
    monkeypatch.setattr(dropout_module, "torch_bernoulli_is_serial", lambda: True)


def train_dropout(p: float) -> Dropout:
    return Dropout(p).train()


@pytest.mark.parametrize("p", [0.1, 0.3, 0.5])
def test_drop_rate_and_scale_match_the_quantised_p(p):
    torch.manual_seed(0)
    n = 1_000_000
    out = train_dropout(p)(torch.ones(n))
    p_eff = lane_drop_count(p) / LANES
    assert abs(p_eff - p) <= 0.5 / LANES
    kept = out != 0
    # 5 standard deviations of a binomial count
    assert abs(kept.double().mean().item() - (1 - p_eff)) < 5 * math.sqrt(p_eff * (1 - p_eff) / n)
    assert torch.equal(out[kept].unique(), torch.tensor([1 / (1 - p_eff)]))
    # the expected output is the input, as with nn.Dropout
    assert abs(out.double().mean().item() - 1.0) < 5 * math.sqrt(p_eff / (1 - p_eff) / n)


def test_neighbouring_elements_are_independent():
    # four lanes share each 64-bit word; a lane reused twice would correlate neighbours
    torch.manual_seed(1)
    kept = (train_dropout(0.5)(torch.ones(400_000)) != 0).double()
    for lag in (1, 2, 3, 4):
        corr = torch.corrcoef(torch.stack((kept[:-lag], kept[lag:])))[0, 1].item()
        assert abs(corr) < 0.01, lag


def test_gradient_is_the_mask_and_shapes_are_kept():
    torch.manual_seed(2)
    x = torch.randn(3, 7, 5, requires_grad=True)
    out = train_dropout(0.2)(x)
    out.sum().backward()
    assert out.shape == x.shape
    scale = LANES / (LANES - lane_drop_count(0.2))
    expected_grad = (out != 0).float() * scale
    assert torch.allclose(x.grad, expected_grad)
    assert torch.allclose(out, x.detach() * expected_grad)


def test_seeded_masks_repeat_and_eval_is_the_identity():
    x = torch.randn(64, 33)
    torch.manual_seed(3)
    first = train_dropout(0.1)(x)
    torch.manual_seed(3)
    assert torch.equal(train_dropout(0.1)(x), first)
    assert torch.equal(Dropout(0.1).eval()(x), x)
    assert torch.equal(train_dropout(0.0)(x), x)


def test_where_torch_bernoulli_is_parallel_torch_dropout_is_used(monkeypatch):
    monkeypatch.setattr(dropout_module, "torch_bernoulli_is_serial", lambda: False)
    x = torch.randn(300, 40)
    torch.manual_seed(4)
    ours = train_dropout(0.1)(x)
    torch.manual_seed(4)
    assert torch.equal(ours, nn.functional.dropout(x, 0.1, training=True))


@pytest.mark.parametrize(
    ("vendor", "mkl", "serial"),
    [("GenuineIntel", True, False), ("AuthenticAMD", True, True), ("GenuineIntel", False, True), ("", True, True)],
)
def test_bit_path_only_where_torch_bernoulli_is_serial(monkeypatch, vendor, mkl, serial):
    monkeypatch.undo()  # the real classifier, not the fixture's
    monkeypatch.setattr(dropout_module, "_cpu_vendor", lambda: vendor)
    monkeypatch.setattr(torch.backends.mkl, "is_available", lambda: mkl)
    dropout_module.torch_bernoulli_is_serial.cache_clear()
    try:
        assert dropout_module.torch_bernoulli_is_serial() is serial
    finally:
        dropout_module.torch_bernoulli_is_serial.cache_clear()


def test_other_dtypes_use_torch_dropout():
    x = torch.ones(1000, dtype=torch.bfloat16)
    out = train_dropout(0.1)(x)
    assert out.dtype == torch.bfloat16
    assert set(out.unique().tolist()) <= {0.0, torch.tensor(1 / 0.9, dtype=torch.bfloat16).item()}


@pytest.mark.parametrize("name", ["transformer", "prm", "setrank"])
def test_models_with_dropout_use_it(name):
    model = rerankers.build_model(name, user_dim=4, item_dim=3, d_model=16, dim_feedforward=32, dropout=0.2)
    dropouts = [m for m in model.modules() if isinstance(m, nn.Dropout)]
    assert dropouts and all(type(m) is Dropout and m.p == 0.2 for m in dropouts)


def test_swap_keeps_p_and_leaves_other_modules():
    net = with_fast_dropout(nn.Sequential(nn.Linear(2, 2), nn.Sequential(nn.Dropout(0.25)), nn.ReLU()))
    assert type(net[1][0]) is Dropout and net[1][0].p == 0.25
    assert type(net[0]) is nn.Linear and type(net[2]) is nn.ReLU
