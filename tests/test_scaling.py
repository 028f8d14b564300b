"""Scaling (issue 30): fitted exponents on synthetic timings, sweep files of [[sweep]] parts, the memory budget."""

import re
import resource

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from bench.cli import app
from bench.config import ConfigError, memory_bytes
from bench.records import load_records
from bench.scaling import exponent_text, fit_exponent, largest_row
from bench.sweep import build_cells, load_sweep_file, with_parts_overridden
from bench.tables import reference_point

AXIS = [5, 10, 20, 50, 100]
runner = CliRunner()


def _timings(exponent: float, within: float, between: float, seed: int, per_point: int = 15) -> list[list[float]]:
    """Samples of a cost c * x^exponent: each point's level off the power law by a factor exp(N(0, between)) (the
    machine's level shifts between cells), each sample by exp(N(0, within)) around it."""
    rng = np.random.default_rng(seed)
    return [
        list(2e-3 * x**exponent * np.exp(rng.normal(0, between) + rng.normal(0, within, per_point))) for x in AXIS
    ]


@pytest.mark.parametrize("exponent", [0.0, 1.0, 1.8, 2.0])
def test_fit_recovers_a_known_exponent_within_its_interval(exponent):
    """Over 40 synthetic series the interval holds the true exponent at least 90% of the time (it is meant to
    cover 95% or more), every series is fitted, and the slopes centre on the truth."""
    fits = [fit_exponent(AXIS, _timings(exponent, within=0.05, between=0.03, seed=seed)) for seed in range(40)]
    assert all(fit.fitted for fit in fits)
    assert sum(fit.low <= exponent <= fit.high for fit in fits) >= 36
    assert abs(np.median([fit.slope for fit in fits]) - exponent) < 0.02
    assert max(abs(fit.slope - exponent) for fit in fits) < 0.1


def test_a_noisy_series_is_not_fitted():
    fit = fit_exponent(AXIS, _timings(1.0, within=0.05, between=0.8, seed=1))
    assert not fit.fitted and fit.reason.startswith("too noisy"), fit
    assert exponent_text("T", fit, fit_exponent(AXIS, [[x] for x in AXIS])).startswith("not fitted: too noisy")
    # Each point's own samples that spread widely widen the interval even where the medians happen to lie on a line.
    spread = [list(x * np.exp(np.random.default_rng(x).normal(0, 1.5, 7))) for x in AXIS]
    assert not fit_exponent(AXIS, spread).fitted


def test_exact_counts_give_the_exact_slope_and_too_few_points_no_fit():
    flops = fit_exponent(AXIS, [[3 * x**2] for x in AXIS])
    assert flops.fitted and flops.slope == pytest.approx(2.0) and flops.high - flops.low == pytest.approx(0, abs=1e-9)
    assert exponent_text("T", flops, flops) == "grows as T^2.00 [2.00, 2.00]; FLOPs T^2.00"
    assert not fit_exponent(AXIS[:2], [[1.0], [2.0]]).fitted
    assert "no logarithm" in fit_exponent(AXIS, [[1.0], [0.0], [2.0], [3.0], [4.0]]).reason


def test_largest_shape_trained_and_first_out_of_memory():
    line = pd.DataFrame({"slate_length": [5, 10, 20, 50], "status": ["ok", "ok", "oom", "oom"]})
    assert largest_row(line, "slate_length") == ("10", "20")
    assert largest_row(line.iloc[:2], "slate_length") == ("10", "none (largest tried: 10)")


def _sweep_file(tmp_path, text):
    path = tmp_path / "sweep.toml"
    path.write_text(text)
    return load_sweep_file(path)


PARTS = """
profile = "smoke"
models = "mlp"
[[sweep]]
batch_size = 64
slate_length = [5, 10, 20]
[[sweep]]
slate_length = 10
batch_size = [16, 64, 256]
"""


def test_sweep_parts_are_products_that_share_a_cell_once(tmp_path):
    settings = _sweep_file(tmp_path, PARTS)
    shapes = [(c.workload.batch_size, c.workload.slate_length) for c in build_cells(settings)]
    assert shapes == [(64, 5), (64, 10), (64, 20), (16, 10), (256, 10)]
    # The command line overrides the file's keys, in every part too.
    overridden = build_cells(with_parts_overridden(settings, {"batch_size": 32, "epochs": 1}))
    assert {(c.workload.batch_size, c.train.epochs) for c in overridden} == {(32, 1)}
    # The report holds each line at the cell where the parts meet.
    frame = pd.DataFrame(shapes, columns=["batch_size", "slate_length"])
    assert reference_point(frame, ["batch_size", "slate_length"]) == {"batch_size": 64, "slate_length": 10}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[[sweep]]\nbatch_sizes = [1]\n", "[[sweep]] number 1: unknown key(s) batch_sizes"),
        ("[[sweep]]\nexecutor = 'inline'\n", "executor applies to the whole run"),
        ("[[sweep]]\nbatch_size = [0]\n", "batch-size must be positive"),
        ("sweep = 3\n", "must be [[sweep]] tables"),
    ],
)
def test_bad_sweep_parts_are_refused_by_their_declarations(tmp_path, text, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        _sweep_file(tmp_path, text)


def test_memory_sizes():
    assert memory_bytes("2GiB") == 2 * 1024**3
    assert memory_bytes("512 MiB") == 512 * 1024**2
    assert memory_bytes("1.5GB") == 1_500_000_000
    assert memory_bytes("4096") == 4096
    for bad in ("lots", "-1GiB", "0", "2 GiBs", ""):
        with pytest.raises(ConfigError, match="memory-limit must be a positive size"):
            memory_bytes(bad)
    result = runner.invoke(app, ["run", "--models", "mlp", "--memory-limit", "lots", "--dry-run"])
    assert result.exit_code == 2 and "error: memory-limit must be a positive size" in result.stderr


def test_a_cell_beyond_its_budget_is_an_oom_record(tmp_path, faulty_plugin):
    """The budget is applied in the cell's own process (RLIMIT_DATA): torch's allocation beyond it fails there, and
    the cell ends as an oom record with the allocator's message; the same cell without a budget trains (both in one
    run: a sweep file of two parts, one with a budget)."""
    sweep = tmp_path / "budget.toml"
    sweep.write_text('models = "test-exceeds-budget"\n[[sweep]]\nmemory_limit = "6GiB"\n[[sweep]]\nepochs = 1\n')
    tiny = ["--profile", "smoke", "--batches", "2", "--epochs", "1", "--batch-size", "16", "--valid-slates", "32"]
    tiny += ["--test-slates", "32", "--executor", "process", "--out", str(tmp_path), "--run-id", "r"]
    own_budget = resource.getrlimit(resource.RLIMIT_DATA)
    result = runner.invoke(app, ["run", "--sweep", str(sweep), *tiny])
    assert result.exit_code == 1, result.output
    limited, free = load_records(tmp_path / "r" / "records.jsonl")
    assert limited["status"] == "oom" and "allocate" in limited["error"], limited["error"]
    assert limited["memory_budget"]["memory_limit_method"] == "RLIMIT_DATA"
    assert limited["memory_budget"]["memory_limit_bytes"] == 6 * 1024**3
    assert free["status"] == "ok" and free["memory_budget"]["memory_limit_method"].startswith("none")
    assert resource.getrlimit(resource.RLIMIT_DATA) == own_budget  # the driver's own limit: untouched


def test_the_scaling_plot_draws_each_shape_axis_with_three_values(tmp_path):
    from bench.scaling_plot import write_scaling_plots
    from bench.tables import PEAK_MEMORY

    rows = []
    for model, exponent in (("a", 1.0), ("b", 2.0)):
        for x, samples in zip(AXIS, _timings(exponent, 0.05, 0.02, seed=3), strict=True):
            rates = [1 / s for s in samples]
            timings = {"train_samples_per_s": {"samples": rates}, "latency_b1_ms": {"samples": samples}}
            record = {"timings": timings, "measurements": {"train_flops_per_sample": x**exponent}}
            rows.append({"model": model, "status": "ok", "slate_length": x, "batch_size": 64, PEAK_MEMORY: 10.0 * x,
                         "_record": record})  # fmt: skip
    written = write_scaling_plots(pd.DataFrame(rows), ["slate_length"], tmp_path)
    assert [name for _, name in written] == ["scaling_vs_slate_length.png"]
    assert (tmp_path / "scaling_vs_slate_length.png").stat().st_size > 10_000
