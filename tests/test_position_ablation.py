"""The position-ablation script's spec registration (the models it compares are tested with the zoo)."""

import importlib.util
from pathlib import Path

import pytest
import torch

import rerankers
from bench.records import load_records
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


def test_default_pairs_run_prm_and_setrank_with_and_without_the_rank_embedding(ablation, tmp_path, capsys):
    ablation.main(["--profile", "smoke", "--seeds", "0", "--epochs", "1", "--out", str(tmp_path), "--run-id", "ab"])
    printed = capsys.readouterr().out
    for with_name, without_name in [("prm", "prm[position_embedding=False]"), ("setrank-init", "setrank")]:
        run_dir = tmp_path / f"ab-{with_name}"
        records = load_records(run_dir / "records.jsonl")
        assert sorted(r["model"] for r in records) == sorted([with_name, without_name])
        assert all(r["status"] == "ok" for r in records)
        assert all(r["config"]["workload"]["initial_noise"] == 0.5 for r in records)  # informative order
        assert f"with: {with_name}; without: {without_name}" in printed
        assert (run_dir / "report.md").exists()
