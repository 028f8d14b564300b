import json

import pytest
import torch

import rerankers
from bench.cell import run_cell
from bench.flops import CACHE_ENV, analytic_forward_flops, count_flops, cpu_peak_flops, peak_flops
from rerankers import SlateBatch


@pytest.mark.parametrize(
    "name, options",
    [
        ("transformer", {"d_model": 32, "dim_feedforward": 64}),
        ("transformer", {"d_model": 16, "dim_feedforward": 48, "num_layers": 3, "nhead": 4}),
        ("mlp", {"d_model": 24}),
    ],
)
def test_counted_flops_match_the_analytic_count(name, options):
    model = rerankers.build_model(name, user_dim=5, item_dim=6, **options)
    batch = SlateBatch(
        torch.randn(3, 5), torch.randn(3, 7, 6), torch.ones(3, 7, dtype=torch.bool), torch.arange(7).expand(3, 7)
    )
    train, inference = count_flops(model, batch)
    assert inference == 3 * analytic_forward_flops(name, options, 7, 5, 6)
    # backward costs about twice the forward (weight and input gradients), minus the first layer's input grad
    assert 2.5 * inference < train <= 3 * inference
    assert all(p.grad is None for p in model.parameters())


def test_data_sheet_peaks():
    cuda = torch.device("cuda")
    assert peak_flops(cuda, "bf16", "NVIDIA H100 80GB HBM3")[0] == 989.4e12
    assert peak_flops(cuda, "bf16", "NVIDIA H100 PCIe")[0] == 756e12
    assert peak_flops(cuda, "tf32", "NVIDIA H200")[0] == 494.7e12
    assert peak_flops(cuda, "fp32", "NVIDIA A100-SXM4-40GB")[0] == 19.5e12
    assert peak_flops(cuda, "bf16", "Tesla T4")[0] is None


def test_cpu_peak_is_measured_once_and_cached(tmp_path, monkeypatch):
    monkeypatch.setenv(CACHE_ENV, str(tmp_path))
    first = cpu_peak_flops("fp32", "test-cpu")
    cached = json.loads((tmp_path / "peak_flops.json").read_text())
    assert list(cached.values()) == [first] and first > 1e8
    (tmp_path / "peak_flops.json").write_text(json.dumps({k: 123.0 for k in cached}))
    assert cpu_peak_flops("fp32", "test-cpu") == 123.0


def test_bf16_cell_records_its_precision_and_mfu(smoke_cell, tmp_path, monkeypatch):
    monkeypatch.setenv(CACHE_ENV, str(tmp_path))
    fp32 = smoke_cell("transformer")
    bf16 = smoke_cell("transformer", precision="bf16")
    record = run_cell(bf16)
    assert record["status"] == "ok", record["error"]
    assert record["environment"]["precision"] == "bf16" and record["environment"]["amp"] == "bf16"
    assert bf16.key() != fp32.key()
    x = record["measurements"]
    assert x["train_flops_per_sample"] > x["infer_flops_per_sample"] > 0
    assert 0 < x["train_mfu"] < 1 and x["peak_source"].startswith("CPU matmul probe")


def test_compiled_cell_matches_eager_accuracy(smoke_cell, tmp_path, monkeypatch):
    monkeypatch.setenv(CACHE_ENV, str(tmp_path))
    eager = run_cell(smoke_cell("mlp", model_kwargs={"d_model": 8}))
    compiled = run_cell(smoke_cell("mlp", model_kwargs={"d_model": 8}, compile=True))
    assert compiled["status"] == "ok", compiled["error"]
    assert compiled["environment"]["compile"] is True
    assert compiled["metrics"]["slate_acc"] == pytest.approx(eager["metrics"]["slate_acc"], abs=0.02)


def test_cell_keys_are_stable_across_releases():
    from bench.config import CellConfig

    # Keys of records written by the first release; changing them would break resume and compare. The default CPU
    # dropout became auto (a deliberate re-reference, docs/performance.md): torch reproduces those cells.
    assert CellConfig(model="mlp", cpu_dropout="torch").key() == "26b08de29cdd27b0"
