import math

import pytest
import torch

from bench.cell import run_cell
from bench.config import TrainConfig, WorkloadConfig
from bench.data import generate
from bench.train import train, valid_slate_acc
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


def _tiny_training(**train_options):
    config = WorkloadConfig(batch_size=64, batches=3, valid_slates=256, test_slates=64)
    data = generate(config, seed=0)
    torch.manual_seed(0)
    model = build_model("mlp", user_dim=7, item_dim=10, d_model=8)
    return model, data, train(model, data.train, data.valid, TrainConfig(**train_options), 64)


def test_patience_stops_after_that_many_epochs_without_a_better_validation():
    # A learning rate too small to move the validation slate_acc: epoch 1 stays the best (a tie keeps the earlier).
    _, _, result = _tiny_training(epochs=8, lr=1e-12, select="best", patience=2)
    assert result.stop_epoch == 3 and len(result.valid_slate_acc) == len(result.train_loss) == 3
    assert result.selected_epoch == 1 and len(set(result.valid_slate_acc)) == 1


def test_patience_restores_the_best_epoch_and_never_stops_an_improving_run():
    model, data, result = _tiny_training(epochs=6, lr=3e-2, select="best", patience=1)
    history = result.valid_slate_acc
    best = history.index(max(history)) + 1
    assert result.selected_epoch == best and valid_slate_acc(model, data.valid, 64) == max(history)
    # patience 1: every epoch before the stop improved on the best so far; the stop epoch did not, or was the last
    assert result.stop_epoch == len(history)
    assert all(history[e] > max(history[:e]) for e in range(1, len(history) - 1))
    assert result.stop_epoch == 6 or history[-1] <= max(history[:-1])
    _, _, unlimited = _tiny_training(epochs=4, lr=1e-12, select="last", patience=None)
    assert unlimited.stop_epoch == 4 and unlimited.selected_epoch == 4


def test_the_record_says_the_stop_epoch_and_the_optimizer(smoke_cell):
    small = {"model_kwargs": {"d_model": 8}}
    stopped = run_cell(smoke_cell("mlp", train=TrainConfig(epochs=4, lr=1e-12, select="best", patience=1), **small))
    assert stopped["status"] == "ok", stopped["error"]
    history = stopped["history"]
    assert history["stop_epoch"] == 2 and history["stopped_early"] and history["selected_epoch"] == 1
    assert len(history["valid_slate_acc"]) == 2
    full = run_cell(smoke_cell("mlp", **small))
    assert full["history"]["stop_epoch"] == 2 and not full["history"]["stopped_early"]
    assert full["environment"]["optimizer"] == stopped["environment"]["optimizer"] in ("fused", "foreach")


def test_patience_is_off_unless_asked_and_keeps_earlier_keys():
    from bench.config import PROFILES, CellConfig

    assert TrainConfig().patience is None and all(p["train"].patience is None for p in PROFILES.values())
    assert CellConfig(model="mlp", cpu_dropout="torch").key() == "26b08de29cdd27b0"  # before patience existed
    assert CellConfig(model="mlp", train=TrainConfig(patience=2)).key() != CellConfig(model="mlp").key()


def test_fused_adam_where_torch_has_it_on_cpu():
    from bench.train import make_optimizer, optimizer_path

    model = torch.nn.Linear(3, 1)
    fused = tuple(int(v) for v in torch.__version__.split(".")[:2]) >= (2, 4)
    assert optimizer_path(make_optimizer(model, TrainConfig())) == ("fused" if fused else "foreach")
