"""The position-ablation script's pieces: spec registration and the local position-aware model."""

import importlib.util
from pathlib import Path

import pytest
import torch

import rerankers
from rerankers import SlateBatch

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "position_ablation.py"


@pytest.fixture(scope="module")
def ablation():
    spec = importlib.util.spec_from_file_location("position_ablation", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def batch(positions):
    g = torch.Generator().manual_seed(0)
    return SlateBatch(
        torch.randn(2, 3, generator=g), torch.randn(2, 4, 5, generator=g), torch.ones(2, 4, dtype=bool), positions
    )


def test_specs_register_distinct_display_names(ablation):
    name = ablation.register_spec("mlp:d_model=8")
    try:
        assert name == "mlp[d_model=8]"
        model = rerankers.build_model(name, user_dim=3, item_dim=5)
        assert model.net[0].out_features == 8
        assert ablation.register_spec("mlp:d_model=8") == name  # idempotent
        assert ablation.register_spec("mlp") == "mlp"
    finally:
        rerankers.unregister(name)


def test_the_position_variant_reads_ranks_and_the_other_does_not(ablation):
    swapped = torch.tensor([[3, 2, 1, 0], [0, 1, 2, 3]])
    straight = torch.arange(4).expand(2, 4)
    for use_position, changes in ((True, True), (False, False)):
        torch.manual_seed(0)
        model = ablation.PositionTransformer(3, 5, d_model=8, dim_feedforward=16, use_position=use_position).eval()
        differ = not torch.allclose(model(batch(straight)), model(batch(swapped)))
        assert differ == changes
    torch.manual_seed(0)
    a = ablation.PositionTransformer(3, 5, d_model=8, dim_feedforward=16, use_position=True)
    torch.manual_seed(0)
    b = ablation.PositionTransformer(3, 5, d_model=8, dim_feedforward=16, use_position=False)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters(), strict=True))  # same start
