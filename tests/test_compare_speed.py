"""bench compare knows noise and direction: an A/A pair of runs shows no regression, speeds are tested on the
stretches of time their samples were taken in with Holm's correction across them, contended cells are excused
unless asked, and nothing compared is an error. (A model made ~20% slower is bench ab's to find: tests/test_ab.py.)"""

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from bench.cli import app
from bench.compare import compare_runs
from bench.config import CellConfig, WorkloadConfig
from bench.records import append_record, new_record
from bench.stats import shares, timing_summary
from rerankers import registry

runner = CliRunner()
TESTS = Path(__file__).resolve().parent


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


@pytest.mark.timing
def test_an_aa_pair_of_all_models_has_no_regression(tmp_path):
    """Two back-to-back smoke runs of every model: whatever moved, nothing is called a regression."""
    for run_id in ("a", "b"):
        args = ("run", "--profile", "smoke", "--models", "all", "--executor", "inline")
        result = invoke(*args, "--out", tmp_path, "--run-id", run_id)
        assert result.exit_code == 0, result.output
    result = invoke("compare", tmp_path / "a", tmp_path / "b", "--all")
    assert result.exit_code == 0, result.output
    assert "REGRESSION" not in result.stdout
    assert f"of {len(registry.list_models())} cell(s) ok in both runs" in result.stdout


def _run_dir(tmp_path, name, rate=None, contended=False, slate_acc=0.5, latency_ms=None, segments=None):
    """A run of one synthetic MLP record: training rate samples tightly around ``rate`` (10 epochs of 2 blocks),
    or batch-1 latency samples ``latency_ms`` with their percentiles, taken in 7 bursts."""
    record = new_record(CellConfig(model="mlp", workload=WorkloadConfig(batches=1)))
    if latency_ms is None:
        timing = timing_summary([rate * (1 + 0.002 * (i % 5)) for i in range(20)], segments or [2] * 10)
        record["timings"] = {"train_samples_per_s": timing}
        record["measurements"] = {"train_samples_per_s": timing["median"]}
    else:
        record["timings"] = {"latency_b1_ms": timing_summary(list(latency_ms), segments or shares(len(latency_ms), 7))}
        kept = record["timings"]["latency_b1_ms"]["samples"]
        record["measurements"] = {f"latency_b1_p{q}_ms": float(np.percentile(kept, q)) for q in (50, 95, 99)}
    record["metrics"] = {"slate_acc": slate_acc}
    record["conditions"] = {"contended": contended}
    run_dir = tmp_path / name
    run_dir.mkdir()
    append_record(run_dir / "records.jsonl", json.loads(json.dumps(record)))
    return run_dir


def test_a_significant_slowdown_beyond_the_threshold_is_a_regression(tmp_path):
    before, after = _run_dir(tmp_path, "a", 1000.0), _run_dir(tmp_path, "b", 800.0)
    (change,) = [c for c in compare_runs(before, after, 0.05).changes if c.name == "train_samples_per_s"]
    assert change.test == "Mann-Whitney U, 10+10 epochs" and change.p < 0.001 and change.regression
    faster = _run_dir(tmp_path, "c", 1200.0)
    (change,) = [c for c in compare_runs(before, faster, 0.05).changes if c.name == "train_samples_per_s"]
    assert not change.regression and change.verdict == "better"


def test_a_contended_cell_is_shown_but_not_a_regression_unless_asked(tmp_path):
    before, after = _run_dir(tmp_path, "a", 1000.0), _run_dir(tmp_path, "b", 500.0, contended=True)
    result = invoke("compare", before, after)
    assert result.exit_code == 0, result.output
    assert "contended: not judged" in result.stdout and "1 cell(s) ran contended in A or B" in result.stdout
    strict = invoke("compare", before, after, "--include-contended")
    assert strict.exit_code == 1 and "REGRESSION" in strict.stdout


def test_a_timing_too_noisy_to_resolve_the_threshold_is_not_called(tmp_path):
    before, after = _run_dir(tmp_path, "a", 1000.0), _run_dir(tmp_path, "b", 900.0)
    records = [json.loads(line) for line in (after / "records.jsonl").read_text().splitlines()]
    # +-30% within every epoch (interval far wider than 5%), each epoch's median 900: significant, unresolved
    noisy = [900.0 * (0.7 if i % 2 else 1.3) for i in range(20)]
    records[0]["timings"]["train_samples_per_s"] = timing_summary(noisy, [2] * 10)
    (after / "records.jsonl").write_text(json.dumps(records[0]) + "\n")
    (change,) = [c for c in compare_runs(before, after, 0.05).changes if c.name == "train_samples_per_s"]
    assert change.p_adjusted < 0.05
    assert not change.resolved and not change.regression and "too noisy" in change.verdict


def test_a_slower_latency_tail_is_judged_on_the_tail_and_an_unresolvable_p99_is_not_called(tmp_path):
    """The slowest tenth of 200 requests got 50% slower, the median did not move: p95 is a regression, judged on
    each burst's p95; the p99 of 200 samples has no 95% interval, so it is never called; p50 stays."""
    rng = np.random.default_rng(3)
    before = rng.normal(1.0, 0.02, size=200)
    after = before.copy()
    start = 0
    for size in shares(200, 7):  # in every burst, its three slowest requests
        burst = after[start : start + size]
        burst[np.argsort(burst)[-3:]] *= 1.5
        start += size
    runs = _run_dir(tmp_path, "a", latency_ms=before), _run_dir(tmp_path, "b", latency_ms=after)
    changes = {c.name: c for c in compare_runs(*runs, 0.05).changes}
    p95, p99 = changes["latency_b1_p95_ms"], changes["latency_b1_p99_ms"]
    assert p95.test == "Mann-Whitney U p95s, 7+7 bursts" and p95.p < 0.001 and p95.resolved and p95.regression
    assert p95.p_adjusted == pytest.approx(3 * p95.p)  # Holm across the three latency values tested
    assert p99.worse and not p99.resolved and not p99.regression
    assert not changes["latency_b1_p50_ms"].flagged


def test_nothing_to_compare_is_an_error(tmp_path):
    before = _run_dir(tmp_path, "a", 1000.0)
    other = tmp_path / "other"
    other.mkdir()
    record = new_record(CellConfig(model="transformer", workload=WorkloadConfig(batches=1)))
    append_record(other / "records.jsonl", record)
    result = invoke("compare", before, other)
    assert result.exit_code == 1 and "nothing was compared" in result.stderr
    assert invoke("compare", before, before, "--threshold", "nan").exit_code == 2


def test_two_proportion_test():
    from scipy import stats

    from bench.stats import two_proportion_p

    assert two_proportion_p(50, 100, 50, 100) == 1.0
    z = (0.7 - 0.5) / (0.6 * 0.4 * (2 / 100)) ** 0.5
    assert two_proportion_p(70, 100, 50, 100) == pytest.approx(2 * stats.norm.sf(z))


def test_samples_of_one_stretch_of_time_count_once(tmp_path):
    """A level that held for one stretch of time is one piece of evidence, not as many as its samples: the same
    20 training blocks, 20% slower, are a regression when they came from 10 epochs and noise when from 2."""
    before = _run_dir(tmp_path, "a", 1000.0)
    after = _run_dir(tmp_path, "b", 800.0)
    (change,) = [c for c in compare_runs(before, after, 0.05).changes if c.name == "train_samples_per_s"]
    assert change.regression
    two_before = _run_dir(tmp_path, "c", 1000.0, segments=[10, 10])
    two_after = _run_dir(tmp_path, "d", 800.0, segments=[10, 10])
    (change,) = [c for c in compare_runs(two_before, two_after, 0.05).changes if c.name == "train_samples_per_s"]
    assert change.test == "Mann-Whitney U, 2+2 epochs" and change.p_adjusted > 0.05 and not change.regression


def test_records_without_kept_segments_are_cut_as_their_samplers_dealt_them():
    """Records written before segments were kept: training blocks by epochs, serving samples by bursts."""
    from bench.catalog import lookup
    from bench.compare import stretch_quantiles

    record = {
        "config": {"train": {"epochs": 3}},
        "measurements": {"serving_bursts": 2},
        "timings": {
            "train_samples_per_s": {"samples": [1, 2, 3, 10, 20, 30, 100]},  # epochs of 3, 2 and 2 blocks
            "latency_b1_ms": {"samples": [1.0, 2.0, 3.0, 4.0, 5.0]},
        },
    }
    assert stretch_quantiles(record, lookup("train_samples_per_s")) == [2.0, 15.0, 65.0]
    assert stretch_quantiles(record, lookup("latency_b1_p50_ms")) == [2.0, 4.5]
    record["measurements"] = {"latency_bursts": 5}  # schema 2
    assert stretch_quantiles(record, lookup("latency_b1_p50_ms")) == [1.0, 2.0, 3.0, 4.0, 5.0]


def test_holm_runs_across_the_speed_values_of_the_comparison(tmp_path):
    """Two cells, each 20% slower in training (the MLP over 10 epochs, the transformer over 5): the p-values are
    Holm-adjusted together, the smaller one times 2, the larger one times 1."""
    runs = []
    for name, rate in (("a", 1000.0), ("b", 800.0)):
        run_dir = tmp_path / name
        for model, epochs in (("mlp", [2] * 10), ("transformer", [4] * 5)):
            record = new_record(CellConfig(model=model, workload=WorkloadConfig(batches=1)))
            timing = timing_summary([rate * (1 + 0.002 * (i % 5)) for i in range(20)], epochs)
            record["timings"] = {"train_samples_per_s": timing}
            record["measurements"] = {"train_samples_per_s": timing["median"]}
            record["metrics"] = {"slate_acc": 0.5}
            append_record(run_dir / "records.jsonl", json.loads(json.dumps(record)))
        runs.append(run_dir)
    speeds = [c for c in compare_runs(*runs, 0.05).changes if c.name == "train_samples_per_s"]
    assert len(speeds) == 2 and all(c.regression for c in speeds)
    ratios = {c.cell.split()[0]: c.p_adjusted / c.p for c in speeds}
    assert ratios == pytest.approx({"mlp": 2.0, "transformer": 1.0})


def test_compare_says_one_run_per_side_cannot_tell_drift_from_a_change(tmp_path):
    result = invoke("compare", _run_dir(tmp_path, "a", 1000.0), _run_dir(tmp_path, "b", 1000.0))
    assert result.exit_code == 0, result.output
    assert "Holm across 1 speed value(s)" in result.stdout
    assert "one run per side cannot separate a change from drift between runs" in result.stdout
    assert "bench ab" in result.stdout


def test_the_committed_aa_pair_has_no_speed_regression():
    """The two quiet default runs of every model in results/reference/stability (same code, minutes apart)."""
    base = TESTS.parent / "results" / "reference" / "stability"
    comparison = compare_runs(base / "aa-1", base / "aa-2", 0.05)
    speeds = [c for c in comparison.changes if c.kind in ("speed", "latency")]
    assert len(speeds) == 57 and comparison.compared_cells == 12
    assert comparison.regressions == 0
