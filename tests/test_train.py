import math

import pytest
import torch

from bench.cell import run_cell
from bench.config import TrainConfig, WorkloadConfig
from bench.data import generate
from bench.train import train
from rerankers import build_model, register, unregister


@pytest.mark.parametrize("name", ["transformer", "mlp"])
def test_short_training_lowers_the_loss(name):
    config = WorkloadConfig(batch_size=128, batches=20, valid_slates=256, test_slates=256)
    data = generate(config, seed=0)
    torch.manual_seed(0)
    model = build_model(name, user_dim=7, item_dim=10, d_model=32)
    result = train(model, data.train, data.valid, TrainConfig(epochs=3, warmup_steps=2), 128)
    assert result.train_loss[-1] < result.train_loss[0] - 0.05
    assert result.steady_samples == 128 * (20 * 3 - 2)
    assert result.samples_per_second > 0 and math.isfinite(result.samples_per_second)
    assert len(result.valid_slate_acc) == 3


def test_cell_record_is_complete(smoke_cell):
    record = run_cell(smoke_cell("mlp", model_kwargs={"d_model": 8}))
    assert record["status"] == "ok", record["error"]
    assert set(record["metrics"]) >= {"slate_acc", "total_acc", "mrr", "ndcg@1", "ndcg@3", "ndcg@5"}
    assert 0 <= record["metrics"]["slate_acc"] <= 1
    x = record["measurements"]
    for field in (
        "parameters",
        "train_samples_per_s",
        "infer_samples_per_s",
        "latency_b1_p50_ms",
        "latency_b1_p99_ms",
        "cpu_peak_rss_mib",
        "wall_seconds",
    ):
        assert x[field] > 0, field
    assert x["latency_b1_p50_ms"] <= x["latency_b1_p99_ms"]
    env = record["environment"]
    assert env["torch"] == torch.__version__ and env["threads"] >= 1
    assert len(record["history"]["train_loss"]) == 2


def test_diverging_and_failing_cells_are_recorded(smoke_cell):
    @register("test-nan")
    class NaNModel(torch.nn.Module):
        def __init__(self, user_dim, item_dim):
            super().__init__()
            self.w = torch.nn.Parameter(torch.ones(1))

        def forward(self, batch):
            return batch.items[..., 0] * self.w * float("nan")

    @register("test-raise")
    class Raising(torch.nn.Module):
        def __init__(self, user_dim, item_dim):
            super().__init__()
            self.w = torch.nn.Parameter(torch.ones(1))

        def forward(self, batch):
            raise RuntimeError("boom")

    try:
        diverged = run_cell(smoke_cell("test-nan", model_kwargs={}))
        failed = run_cell(smoke_cell("test-raise", model_kwargs={}))
    finally:
        unregister("test-nan")
        unregister("test-raise")
    assert diverged["status"] == "diverged" and "nan" in diverged["error"]
    assert failed["status"] == "failed" and "boom" in failed["error"]
    assert failed["metrics"] == {}
