"""The position-ablation script's spec registration (the models it compares are tested with the zoo)."""

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
