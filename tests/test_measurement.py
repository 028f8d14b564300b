"""Speed and memory measurement: timing samples and their summaries, memory per phase, data placement.

No test asserts a speed: the machine running the tests may be busy. They check what is measured and
how it is summarised.
"""

import math
from dataclasses import replace

import numpy as np
import pytest
import torch

from bench import measure
from bench.cell import run_cell
from bench.config import PROFILES, RunConfig, TrainConfig, WorkloadConfig
from bench.data import digest, generate
from bench.records import RECORDS_FILE, load_records
from bench.runner import run_cells
from bench.stats import (
    compact_samples,
    is_unstable,
    pool_timings,
    quantile_interval,
    timing_summary,
)
from bench.train import TIMING_BLOCKS, train
from rerankers import build_model

MIB = 1024 * 1024


# --- the interval of a quantile ---------------------------------------------------------------------------------


def test_median_interval_uses_order_statistics_with_at_least_95_percent_coverage():
    median_interval = quantile_interval  # q = 0.5 by default
    assert median_interval([1.0, 2.0, 3.0, 4.0, 5.0]) is None  # 5 samples cover 93.75% at best
    low, high, coverage = median_interval([6.0, 1.0, 5.0, 2.0, 4.0, 3.0])
    assert (low, high) == (1.0, 6.0) and coverage == pytest.approx(1 - 2 / 64)
    # n = 20: P(K <= 5) = 0.0207 <= 0.025 < P(K <= 6), so the 6th smallest and the 6th largest.
    low, high, coverage = median_interval([float(v) for v in range(20, 0, -1)])
    assert (low, high) == (6.0, 15.0) and coverage == pytest.approx(0.9586, abs=1e-4)


def test_median_interval_covers_the_true_median_of_a_skewed_distribution():
    rng = np.random.default_rng(0)
    true_median = 1.0  # of a log-normal with mu = 0
    covered = 0
    trials = 2000
    for _ in range(trials):
        low, high, _ = quantile_interval(list(rng.lognormal(0.0, 0.5, size=12)))
        covered += low <= true_median <= high
    assert covered / trials >= 0.95 - 3 * math.sqrt(0.95 * 0.05 / trials)


def test_a_tail_quantile_interval_covers_the_true_p95_and_needs_enough_samples():
    assert quantile_interval([float(v) for v in range(71)], 0.95) is None  # P(all 71 below p95) > 2.5%
    assert quantile_interval([float(v) for v in range(72)], 0.95) is not None
    assert quantile_interval([float(v) for v in range(200)], 0.99) is None  # 200 latency requests: no p99 interval
    rng = np.random.default_rng(1)
    true_p95 = math.exp(0.5 * 1.6448536)  # of a log-normal with mu = 0, sigma = 0.5
    covered, trials = 0, 1000
    for _ in range(trials):
        low, high, coverage = quantile_interval(list(rng.lognormal(0.0, 0.5, size=200)), 0.95)
        assert coverage >= 0.95
        covered += low <= true_p95 <= high
    assert covered / trials >= 0.95 - 3 * math.sqrt(0.95 * 0.05 / trials)


def test_timing_summary_keeps_compact_samples_and_is_recomputable_from_them():
    values = [1234.5678, 1250.0, 1199.991, 1301.2, 1240.4, 1222.2, 1260.0]
    summary = timing_summary(values)
    assert summary["samples"] == [1235.0, 1250.0, 1200.0, 1301.0, 1240.0, 1222.0, 1260.0]
    assert summary["n"] == 7 and summary["median"] == 1240.0
    assert (summary["min"], summary["max"]) == (1200.0, 1301.0)
    assert summary["q1"] <= summary["median"] <= summary["q3"]
    assert (summary["ci_low"], summary["ci_high"]) == (1200.0, 1301.0)
    assert timing_summary(summary["samples"]) == summary
    assert compact_samples([0.000123456, 98765.4]) == [0.0001235, 98770.0]


def test_too_few_samples_have_no_interval_and_count_as_unstable():
    summary = timing_summary([100.0, 101.0, 99.0])
    assert summary["ci_low"] is None and summary["ci_high"] is None
    assert is_unstable(summary)
    assert timing_summary([]) == {"n": 0, "samples": []} and is_unstable(timing_summary([]))


def test_unstable_means_an_interval_wider_than_5_percent_of_the_median():
    steady = timing_summary([100.0 + 0.1 * i for i in range(-10, 11)])
    assert not is_unstable(steady)
    noisy = timing_summary([100.0 + 2.0 * i for i in range(-10, 11)])  # interval reaches ~ +-8
    assert is_unstable(noisy)
    assert not is_unstable(noisy, half_width=0.10)


def test_pooling_summarises_the_samples_of_every_cell_once():
    seed0 = timing_summary([10.0, 11.0, 12.0])
    seed1 = timing_summary([13.0, 14.0, 15.0, 16.0])
    pooled = pool_timings([seed0, seed1])
    assert pooled["n"] == 7 and pooled["median"] == 13.0
    assert (pooled["ci_low"], pooled["ci_high"]) == (10.0, 16.0)
    assert pooled == timing_summary([10.0, 11.0, 12.0, 13.0, 14.0, 15.0, 16.0])


# --- timed blocks of training ---------------------------------------------------------------------------------


def _short_training(timing_blocks: int):
    config = WorkloadConfig(batch_size=32, batches=11, valid_slates=64, test_slates=64)
    data = generate(config, seed=0)
    torch.manual_seed(0)
    model = build_model("mlp", user_dim=7, item_dim=10, d_model=8)
    return train(model, data.train, data.valid, TrainConfig(epochs=2, warmup_steps=3), 32, timing_blocks=timing_blocks)


def test_training_is_timed_in_blocks_of_steady_steps_and_timing_changes_nothing():
    blocked = _short_training(timing_blocks=TIMING_BLOCKS)
    # 2 epochs x 11 steps - 3 warm-up steps = 19 steady steps; 19 // 20 = 1 step per block
    assert len(blocked.block_rates) == 19 and blocked.steady_samples == 32 * 19
    assert all(rate > 0 and math.isfinite(rate) for rate in blocked.block_rates)
    assert blocked.samples_per_second == float(np.median(blocked.block_rates))
    assert blocked.warmup_seconds > 0
    one_block_per_epoch = _short_training(timing_blocks=2)
    assert len(one_block_per_epoch.block_rates) == 2 and one_block_per_epoch.steady_samples == 32 * 19
    assert one_block_per_epoch.train_loss == blocked.train_loss  # the same computation, bit for bit
    assert one_block_per_epoch.valid_slate_acc == blocked.valid_slate_acc


def test_a_record_keeps_every_speed_measurement_as_samples(smoke_cell):
    record = run_cell(smoke_cell("mlp", model_kwargs={"d_model": 8}))
    assert record["status"] == "ok", record["error"]
    timings, x = record["timings"], record["measurements"]
    assert set(timings) == {"train_samples_per_s", "infer_samples_per_s", "latency_b1_ms"}
    # smoke: 2 epochs x 6 steps - 2 warm-up steps, one step per block
    assert timings["train_samples_per_s"]["n"] == 10
    assert timings["infer_samples_per_s"]["n"] == PROFILES["smoke"]["measure"].throughput_blocks
    assert timings["latency_b1_ms"]["n"] == PROFILES["smoke"]["measure"].latency_requests
    # the stretches of time the samples were taken in: training blocks per epoch, serving samples per burst
    assert timings["train_samples_per_s"]["segments"] == [4, 6]
    assert timings["infer_samples_per_s"]["segments"] == [1, 1, 1]
    assert timings["latency_b1_ms"]["segments"] == [4, 3, 3]
    for name, summary in timings.items():
        assert summary == timing_summary(summary["samples"], summary["segments"]), name
    assert x["train_samples_per_s"] == timings["train_samples_per_s"]["median"]
    assert x["infer_samples_per_s"] == timings["infer_samples_per_s"]["median"]
    assert x["latency_b1_p50_ms"] == timings["latency_b1_ms"]["median"]
    assert x["latency_b1_p50_ms"] <= x["latency_b1_p95_ms"] <= x["latency_b1_p99_ms"]
    assert x["latency_b1_p95_ms"] == pytest.approx(np.percentile(timings["latency_b1_ms"]["samples"], 95))
    # smoke: 3 blocks and 10 requests spread over the 2 epochs and the end of the cell
    assert x["serving_bursts"] == PROFILES["smoke"]["train"].epochs + 1


def test_serving_blocks_and_requests_are_spread_in_bursts_and_leave_the_model_as_found():
    class Counting(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.eval_calls = []  # batch size of each eval-mode call

        def forward(self, batch):
            if not self.training:
                self.eval_calls.append(len(batch))
            return batch.items.sum(-1)

    model = Counting().train()
    data = generate(WorkloadConfig(batch_size=8, batches=1, valid_slates=16, test_slates=16), seed=0)
    config = replace(PROFILES["smoke"]["measure"], latency_requests=10, throughput_blocks=5, min_block_seconds=0)
    sampler = measure.ServingSampler(model, data.test[:8].inputs, data.test.inputs, config, bursts=4)
    sampler.burst()  # blocks 5 split 2, 1, 1, 1; requests 10 split 3, 3, 2, 2
    # one untimed call whose output is checked (bench/scores.py), two warm-up calls, one untimed block of one call
    # (it lasts >= 0 s), 2 timed blocks, 3 untimed (checked) and 3 timed requests
    assert model.eval_calls == [8] * 6 + [1] * 6 and model.training
    assert len(sampler.throughput) == 2 and len(sampler.latency_ms) == 3
    sampler.burst()  # later bursts warm up with one call at the batch size, its output checked
    assert model.eval_calls[12:] == [8] * 2 + [1] * 6
    throughput, latency_ms = sampler.finish()
    assert len(throughput) == 5 and len(latency_ms) == 10 and sampler.bursts == 4
    sampler.burst()  # every share taken: nothing more
    assert len(sampler.throughput) == 5 and len(sampler.latency_ms) == 10
    few = replace(config, latency_requests=2, throughput_blocks=1)
    sampler = measure.ServingSampler(model, data.test[:8].inputs, data.test.inputs, few, bursts=4)
    assert [len(part) for part in sampler.finish()] == [1, 2] and sampler.bursts == 2  # empty shares are no burst


def test_a_model_that_trains_nothing_takes_its_serving_measurements_in_one_burst(smoke_cell):
    record = run_cell(smoke_cell("random", model_kwargs={}))
    assert record["status"] == "ok", record["error"]
    assert record["measurements"]["serving_bursts"] == 1
    assert record["timings"]["latency_b1_ms"]["n"] == PROFILES["smoke"]["measure"].latency_requests
    assert record["timings"]["infer_samples_per_s"]["n"] == PROFILES["smoke"]["measure"].throughput_blocks


def test_the_measurement_sizes_are_options_that_reach_the_record(tmp_path):
    from typer.testing import CliRunner

    from bench.cli import app

    args = ["run", "--profile", "smoke", "--models", "mlp", "--executor", "inline", "--out", str(tmp_path)]
    args += ["--run-id", "r", "--latency-requests", "80", "--throughput-blocks", "6"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    (record,) = load_records(tmp_path / "r" / RECORDS_FILE)
    assert record["config"]["measure"]["latency_requests"] == 80
    assert record["timings"]["latency_b1_ms"]["n"] == 80 and record["timings"]["infer_samples_per_s"]["n"] == 6


# --- memory per phase -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("force_sampling", [False, True])
def test_a_phase_peak_net_of_the_baseline_finds_a_200_mib_tensor(force_sampling):
    if measure.cpu_rss_mib() is None:
        pytest.skip("no /proc/self/status: per-phase CPU memory is not measured on this system")
    baseline = measure.cpu_rss_mib()
    with measure.CpuPhasePeak(force_sampling=force_sampling) as phase:
        block = torch.ones(200 * MIB, dtype=torch.uint8)  # every page touched
        if force_sampling:
            phase._stop.wait(0.05)  # hold it longer than the sampling period
        del block
    assert phase.method == ("sampled" if force_sampling else "hwm-reset")
    assert measure.phase_memory_mib(phase, "x", baseline)["cpu_net_peak_rss_x_mib"] == pytest.approx(200, abs=5)


def test_the_peak_of_a_phase_forgets_earlier_phases():
    if not measure.reset_rss_peak():
        pytest.skip("the kernel's peak RSS mark cannot be reset here")
    # Both sizes are above glibc's largest mmap threshold (32 MiB), so each is mapped and unmapped
    # whole: the allocator cannot keep the first block's pages for the second.
    block = torch.ones(300 * MIB, dtype=torch.uint8)
    del block
    baseline = measure.cpu_rss_mib()
    with measure.CpuPhasePeak() as phase:
        smaller = torch.ones(100 * MIB, dtype=torch.uint8)
        del smaller
    assert phase.peak_mib - baseline == pytest.approx(100, abs=5)
    assert measure.cpu_peak_rss_mib() - baseline > 250  # the life-long peak still holds the first block


def test_a_cpu_record_has_memory_per_phase_and_net_of_the_baseline(smoke_cell, tmp_path):
    # In a fresh cell process, as bench run does: in a long-lived process (this one) freed memory is reused,
    # so a small cell's data and model may fit in pages already counted in the baseline.
    run_cells([smoke_cell("mlp", model_kwargs={"d_model": 8})], tmp_path, RunConfig(executor="process"))
    (record,) = load_records(tmp_path / RECORDS_FILE)
    x = record["measurements"]
    for phase in ("train", "infer"):
        assert x[f"cpu_net_peak_rss_{phase}_mib"] == pytest.approx(
            x[f"cpu_peak_rss_{phase}_mib"] - x["cpu_rss_baseline_mib"]
        )
        assert 0 < x[f"cpu_net_peak_rss_{phase}_mib"] < x[f"cpu_peak_rss_{phase}_mib"] <= x["cpu_peak_rss_mib"]
    assert x["cpu_rss_data_mib"] >= 0
    assert record["conditions"]["cpu_memory_method"] in ("hwm-reset", "sampled")


# --- data drawn on the CPU ------------------------------------------------------------------------------------


def test_data_is_drawn_on_the_cpu_whatever_the_device(monkeypatch):
    made_on = []
    real_generator = torch.Generator

    def recording_generator(device="cpu"):
        made_on.append(torch.device(device).type)
        return real_generator(device=device)

    monkeypatch.setattr(torch, "Generator", recording_generator)
    config = replace(PROFILES["smoke"]["workload"], click_model="cascade")  # draws thresholds too
    on_meta = generate(config, seed=5, device="meta")
    assert made_on and set(made_on) == {"cpu"}
    assert on_meta.test.inputs.items.device.type == "meta" and on_meta.value_model.weight.device.type == "meta"
    on_cpu = generate(config, seed=5)
    assert on_meta.test.inputs.items.shape == on_cpu.test.inputs.items.shape


def test_the_data_digest_identifies_a_seeds_data():
    config = PROFILES["smoke"]["workload"]
    first = generate(config, seed=5)
    assert digest(first) == digest(generate(config, seed=5)) == digest(first.to("cpu"))
    assert digest(first) != digest(generate(config, seed=6))
