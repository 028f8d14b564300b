"""bench compare knows noise and direction: an A/A pair of runs shows no regression, a model made ~20% slower
is the only regression, contended cells are excused unless asked, and nothing compared is an error."""

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from bench.cli import app
from bench.compare import compare_runs
from bench.config import CellConfig, WorkloadConfig
from bench.records import append_record, new_record
from bench.stats import timing_summary
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
    assert f"compared {len(registry.list_models())} cell(s)" in result.stdout


@pytest.mark.timing
def test_a_model_made_slower_is_the_only_regression(tmp_path, slowable_plugin, monkeypatch):
    """Run B stands for a code change that makes test-slowable do ~20% more work (same cell keys): its
    training throughput is a regression, the untouched MLP's is not. The smoke profile with 40 batches of
    256 and width 64 gives timing blocks long enough to resolve a 10% threshold. A small VM's speed can drift
    between two runs by more than that (the run's own samples cannot see it, so compare then says "too
    noisy" or, rarely, calls the drift): up to three before/after pairs are run, and one must come out right."""
    size = ("--batches", "40", "--batch-size", "256", "--d-model", "64")
    outcomes = []
    for attempt in range(3):
        args = ("run", "--profile", "smoke", "--models", "mlp,test-slowable", *size, "--out", tmp_path)
        monkeypatch.delenv("SLOWABLE_SLOW", raising=False)
        assert invoke(*args, "--run-id", f"before-{attempt}").exit_code == 0
        monkeypatch.setenv("SLOWABLE_SLOW", "1")
        assert invoke(*args, "--run-id", f"after-{attempt}").exit_code == 0
        result = invoke("compare", tmp_path / f"before-{attempt}", tmp_path / f"after-{attempt}", "--threshold", "0.1")
        regressions = [line for line in result.stdout.splitlines() if "REGRESSION" in line]
        slowable = any("test-slowable" in line and "train_samples_per_s" in line for line in regressions)
        mlp = any(line.startswith("mlp") for line in regressions)
        outcomes.append(result.stdout)
        if slowable and not mlp:
            assert result.exit_code == 1
            return
    pytest.fail("no pair called test-slowable, and only it, a regression:\n" + "\n\n".join(outcomes))


def _run_dir(tmp_path, name, rate=None, contended=False, slate_acc=0.5, latency_ms=None):
    """A run of one synthetic MLP record: training rate samples tightly around ``rate``, or batch-1 latency
    samples ``latency_ms`` with their percentiles."""
    record = new_record(CellConfig(model="mlp", workload=WorkloadConfig(batches=1)))
    if latency_ms is None:
        timing = timing_summary([rate * (1 + 0.002 * (i % 5)) for i in range(20)])
        record["timings"] = {"train_samples_per_s": timing}
        record["measurements"] = {"train_samples_per_s": timing["median"]}
    else:
        record["timings"] = {"latency_b1_ms": timing_summary(list(latency_ms))}
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
    assert change.test == "Mann-Whitney U" and change.p < 0.001 and change.regression
    faster = _run_dir(tmp_path, "c", 1200.0)
    (change,) = [c for c in compare_runs(before, faster, 0.05).changes if c.name == "train_samples_per_s"]
    assert not change.regression and change.verdict == "better"


def test_a_contended_cell_is_shown_but_not_a_regression_unless_asked(tmp_path):
    before, after = _run_dir(tmp_path, "a", 1000.0), _run_dir(tmp_path, "b", 500.0, contended=True)
    result = invoke("compare", before, after)
    assert result.exit_code == 0, result.output
    assert "contended" in result.stdout and "1 cell(s) contended" in result.stdout
    strict = invoke("compare", before, after, "--include-contended")
    assert strict.exit_code == 1 and "REGRESSION" in strict.stdout


def test_a_timing_too_noisy_to_resolve_the_threshold_is_not_called(tmp_path):
    before, after = _run_dir(tmp_path, "a", 1000.0), _run_dir(tmp_path, "b", 900.0)
    records = [json.loads(line) for line in (after / "records.jsonl").read_text().splitlines()]
    noisy = [900.0 * (0.7 + 0.6 * i / 19) for i in range(20)]  # spread +-30%: interval far wider than 5%
    records[0]["timings"]["train_samples_per_s"] = timing_summary(noisy)
    (after / "records.jsonl").write_text(json.dumps(records[0]) + "\n")
    (change,) = [c for c in compare_runs(before, after, 0.05).changes if c.name == "train_samples_per_s"]
    assert not change.resolved and not change.regression and "too noisy" in change.verdict


def test_a_slower_latency_tail_is_judged_on_the_tail_and_an_unresolvable_p99_is_not_called(tmp_path):
    """The slowest tenth of 200 requests got 50% slower, the median did not move: p95 is a regression by
    the quantile test; the p99 of 200 samples has no 95% interval, so it is never called; p50 stays."""
    rng = np.random.default_rng(3)
    before = rng.normal(1.0, 0.02, size=200)
    after = before.copy()
    after[before > np.quantile(before, 0.9)] *= 1.5
    runs = _run_dir(tmp_path, "a", latency_ms=before), _run_dir(tmp_path, "b", latency_ms=after)
    changes = {c.name: c for c in compare_runs(*runs, 0.05).changes}
    p95, p99 = changes["latency_b1_p95_ms"], changes["latency_b1_p99_ms"]
    assert p95.test == "quantile (p95)" and p95.p < 0.001 and p95.resolved and p95.regression
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
