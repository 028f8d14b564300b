"""The test plugin model that can be made ~20% slower (for speed-comparison tests) works as a plugin,
does the extra work, and changes nothing else."""

from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from bench.config import CellConfig, WorkloadConfig
from bench.data import generate
from bench.losses import get_loss
from rerankers import registry

TESTS = Path(__file__).resolve().parent


def _flops_and_scores(slow: bool, batch):
    torch.manual_seed(0)
    model = registry.build_model("test-slowable", user_dim=7, item_dim=10, d_model=64, slow=slow)
    with FlopCounterMode(display=False) as forward:
        scores = model(batch.inputs)
    loss = get_loss("kl")(scores.gather(1, batch.slate), batch.labels, batch.slate_mask)
    with FlopCounterMode(display=False) as backward:
        loss.backward()
    return forward.get_total_flops(), backward.get_total_flops(), scores.detach()


def test_the_slow_option_does_about_a_fifth_more_work_for_the_same_scores(slowable_plugin):
    spec = registry.get_spec("test-slowable")  # found through RERANK_BENCH_PLUGINS
    assert spec.options() == {"d_model": 64, "slow": None}
    batch = generate(WorkloadConfig(batch_size=32, batches=1), seed=0).train
    fast_forward, fast_backward, fast_scores = _flops_and_scores(False, batch)
    slow_forward, slow_backward, slow_scores = _flops_and_scores(True, batch)
    assert torch.equal(fast_scores, slow_scores)
    assert 1.15 < slow_forward / fast_forward < 1.25
    assert 1.15 < slow_backward / fast_backward < 1.25


def test_the_environment_slows_it_without_changing_the_cell_key(slowable_plugin, monkeypatch):
    registry.get_spec("test-slowable")
    assert not registry.build_model("test-slowable", user_dim=2, item_dim=3).slow
    key = CellConfig(model="test-slowable").key()
    monkeypatch.setenv("SLOWABLE_SLOW", "1")
    assert registry.build_model("test-slowable", user_dim=2, item_dim=3).slow
    assert CellConfig(model="test-slowable").key() == key
