"""The speed suite (pytest-benchmark), not part of the default tests.

    nox -s benchmarks          # or: python -m pytest benchmarks --benchmark-json=... && python benchmarks/summarize.py

Each pair is measured side by side in one run; benchmarks/summarize.py turns the JSON into ratios.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
import pytest
import torch
from torch import nn

import founding
import rerankers
from bench.config import PROFILES, TrainConfig, WorkloadConfig
from bench.data import HiddenValueModel, generate, generate_split
from bench.losses import get_loss, kl_divergence
from bench.options import check_settings
from bench.subject import build_runnable
from bench.sweep import build_cells
from bench.train import make_optimizer, train_step

# The blog's data shape; the default profile's model sizes and batch (CPU).
BLOG = WorkloadConfig(batch_size=4096, batches=1, valid_slates=1, test_slates=1)
DEFAULT = PROFILES["default"]
BATCH = DEFAULT["workload"].batch_size
OPTIONS = DEFAULT["model_kwargs"]
STEPS = 10
TRAINABLE = [name for name in rerankers.model_names() if rerankers.get_spec(name).trainable]


@pytest.fixture(scope="module")
def value_model():
    return HiddenValueModel.create(BLOG.user_dim, BLOG.item_dim, torch.Generator().manual_seed(0))


@pytest.mark.benchmark(group="generator: 4096 rows, 10 candidates, slate 5")
def test_generator_harness(benchmark, value_model):
    benchmark.extra_info["rows"] = BLOG.batch_size
    benchmark(generate_split, BLOG, value_model, BLOG.batch_size, 0, "train")


@pytest.mark.benchmark(group="generator: 4096 rows, 10 candidates, slate 5")
def test_generator_founding(benchmark):
    np.random.seed(0)
    generator = founding.FoundingGenerator(BLOG.user_dim, BLOG.item_dim, BLOG.candidates, BLOG.slate_length)
    benchmark.extra_info["rows"] = BLOG.batch_size
    benchmark(generator.batch, BLOG.batch_size)


@pytest.mark.benchmark(group="generator: 4096 rows, 10 candidates, slate 5")
def test_generator_normals_only(benchmark):
    # The floor for a generator that draws the founding data's normals from one torch CPU stream.
    g = torch.Generator().manual_seed(0)
    benchmark.extra_info["rows"] = BLOG.batch_size

    def draw():
        torch.randn(BLOG.batch_size, BLOG.user_dim, generator=g)
        torch.randn(BLOG.batch_size, BLOG.candidates, BLOG.item_dim, generator=g)

    benchmark(draw)


@pytest.fixture(scope="module")
def workload():
    return generate(WorkloadConfig(batch_size=BATCH, batches=STEPS, valid_slates=1, test_slates=1), seed=0)


@pytest.fixture(scope="module")
def batches(workload):
    return list(workload.train.batches(BATCH))


def _model(name: str = "transformer") -> nn.Module:
    torch.manual_seed(0)
    spec = rerankers.get_spec(name)
    options = {k: v for k, v in OPTIONS.items() if k in spec.options()}
    if spec.needs_utility:  # the oracle scores with the hidden value model
        options["utility_fn"] = HiddenValueModel.create(7, 10, torch.Generator().manual_seed(0)).score
    return rerankers.build_model(name, user_dim=7, item_dim=10, **options)


@pytest.mark.benchmark(group=f"training: transformer, {STEPS} steps of batch {BATCH}, harness vs bare loop")
def test_training_harness_loop(benchmark, batches):
    model = _model()
    optimizer = make_optimizer(model, TrainConfig())
    model.train()

    def epoch():
        loss_sum = torch.zeros(())
        for batch in batches:
            loss_sum += train_step(model, batch, optimizer, kl_divergence)
        return loss_sum.item()

    benchmark.extra_info["samples"] = STEPS * BATCH
    benchmark.pedantic(epoch, rounds=7, warmup_rounds=1)


@pytest.mark.benchmark(group=f"training: transformer, {STEPS} steps of batch {BATCH}, harness vs bare loop")
def test_training_bare_loop(benchmark, workload):
    model = _model().train()
    benchmark.extra_info["samples"] = STEPS * BATCH
    benchmark.pedantic(_bare_epoch(model, workload), rounds=7, warmup_rounds=1)


@pytest.mark.benchmark(group=f"training: transformer, {STEPS} steps of batch {BATCH}, harness vs founding code")
def test_transformer_harness(benchmark, workload):
    benchmark.extra_info["samples"] = STEPS * BATCH
    benchmark.pedantic(_harness_epoch("transformer", workload), rounds=7, warmup_rounds=1)


@pytest.mark.benchmark(group=f"training: transformer, {STEPS} steps of batch {BATCH}, harness vs founding code")
def test_transformer_founding(benchmark):
    np.random.seed(0)
    torch.manual_seed(0)
    generator = founding.FoundingGenerator(7, 10, 10, 5)
    data = [generator.batch(BATCH) for _ in range(STEPS)]
    model = founding.founding_transformer(17, OPTIONS["d_model"], OPTIONS["dim_feedforward"])
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, amsgrad=True)
    kl = nn.KLDivLoss(reduction="batchmean")
    model.train()

    def epoch():
        for batch in data:
            loss = kl(torch.log_softmax(founding._scores(model, batch), dim=1), batch["clicks"])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            loss.detach().cpu().numpy()  # the founding loop reads every step's loss on the host
        return None

    benchmark.extra_info["samples"] = STEPS * BATCH
    benchmark.pedantic(epoch, rounds=7, warmup_rounds=1)


def _bare_epoch(model: nn.Module, workload) -> Callable[[], float]:
    """STEPS steps of a plain PyTorch loop: the founding loss and optimiser, nothing of the harness."""
    batches = list(workload.train.batches(BATCH))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, amsgrad=True)

    def epoch():
        for batch in batches:
            scores = model(batch.inputs).gather(1, batch.slate)
            loss = nn.functional.kl_div(torch.log_softmax(scores, 1), batch.clicks, reduction="batchmean")
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        return loss.item()

    return epoch


def _harness_epoch(name: str, workload) -> Callable[[], float]:
    """STEPS steps of a model as `bench run --profile default` trains it: the registry's model with the harness's
    dropout, attention and optimiser, its loss and training step."""
    cell = build_cells(check_settings({"models": name, "profile": "default", "device": "cpu"}))[0]
    torch.manual_seed(0)
    model = build_runnable(cell, workload, torch.device("cpu")).runnable.train()
    optimizer, loss_fn = make_optimizer(model, cell.train), get_loss(cell.train.loss)
    batches = list(workload.train.batches(BATCH))

    def epoch():
        loss_sum = torch.zeros(())
        for batch in batches:
            loss_sum += train_step(model, batch, optimizer, loss_fn)
        return loss_sum.item()

    return epoch


@pytest.mark.parametrize("name", TRAINABLE)
def test_model_step(benchmark, name, workload):
    """Every registered model's training step as a default cell runs it, STEPS steps of the default batch (the
    benchmark's rounds): a slower step of any model shows here. Before each round, untimed by the benchmark, a
    round of the same registry model with stock modules in a bare PyTorch loop: the two sides interleaved, round
    by round, as this machine's speed drifts between levels within seconds; ``extra_info`` keeps both sides'
    round times, whose per-round ratio the summary gives (the harness should never be slower)."""
    harness, bare = _harness_epoch(name, workload), _bare_epoch(_model(name).train(), workload)
    seconds: dict[str, list[float]] = {"harness": [], "bare": []}

    def timed(side: str, epoch: Callable[[], float]) -> Callable[[], None]:
        def run() -> None:  # returns nothing: pytest-benchmark would take a setup's value as the target's arguments
            start = time.perf_counter()
            epoch()
            seconds[side].append(time.perf_counter() - start)

        return run

    benchmark.group = f"training step: every model, {STEPS} steps of batch {BATCH}"
    benchmark.pedantic(timed("harness", harness), setup=timed("bare", bare), rounds=7, warmup_rounds=1)
    benchmark.extra_info.update(samples=STEPS * BATCH, steps=STEPS, seconds=seconds)


@pytest.mark.benchmark(group="inference latency at batch 1 (default profile sizes)")
@pytest.mark.parametrize("name", rerankers.model_names())
def test_forward_latency_batch_1(benchmark, name):
    model = _model(name).eval()
    one = generate(WorkloadConfig(batch_size=1, batches=1, valid_slates=1, test_slates=1), seed=0).test.inputs
    with torch.inference_mode():
        benchmark(model, one)
