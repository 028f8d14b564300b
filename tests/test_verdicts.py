"""The verdicts `bench compare` and the report rest on, each checked on hand-made records and samples where the
wrong rule gives another answer (asymmetric samples, data keys that differ, a cell that stopped finishing).

Unit-sized: no cell runs here, so `nox -s mutants` can run these for every mutant of bench/compare.py and
bench/stats.py.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from bench.catalog import lookup
from bench.cli import app
from bench.compare import Change, compare_runs, relative_change
from bench.config import CellConfig, WorkloadConfig
from bench.records import append_record, new_record, pack_bits
from bench.stats import (
    is_unstable,
    paired_slates,
    quantile_half_width,
    quantile_interval,
    relative_half_width,
    two_proportion_p,
)

runner = CliRunner()


def accuracy_record(hits: list[bool], status: str = "ok", data_key: str | None = None, error: str | None = None):
    """One smoke cell's record with per-slate ``hits`` (its slate_acc is their mean)."""
    record = new_record(CellConfig(model="mlp", workload=WorkloadConfig(batches=1)), status, error)
    if status == "ok":
        kept = torch.tensor(hits, dtype=torch.bool)
        record["metrics"] = {"slate_acc": float(kept.double().mean()), "judged_slates": len(hits)}
        record["per_slate"] = {"slate_hits": pack_bits(kept)}
    if data_key is not None:
        record["data_key"] = data_key
    return json.loads(json.dumps(record))


def run_of(tmp_path, name: str, *records) -> object:
    run_dir = tmp_path / name
    for record in records:
        append_record(run_dir / "records.jsonl", record)
    return run_dir


# 40 slates: A hits 30, B hits 18; 14 slates only A hits, 2 only B: McNemar and the pooled test disagree on p.
HITS_A = [True] * 30 + [False] * 10
HITS_B = [True] * 16 + [False] * 14 + [True] * 2 + [False] * 8


def test_slate_acc_on_the_same_data_is_judged_by_mcnemar_on_the_per_slate_hits(tmp_path):
    before = run_of(tmp_path, "a", accuracy_record(HITS_A))
    after = run_of(tmp_path, "b", accuracy_record(HITS_B))
    (change,) = compare_runs(before, after, 0.05).changes
    expected = paired_slates(np.array(HITS_A), np.array(HITS_B))[2]
    assert change.name == "slate_acc" and change.test == "McNemar"
    assert change.p == pytest.approx(expected) and change.p < 0.01
    assert change.worse and change.regression and change.verdict == "REGRESSION"


def test_slate_acc_on_other_data_is_judged_by_the_two_proportion_test(tmp_path):
    """Hits of different test slates cannot be paired: another data key (or another slate count) means the pooled
    two-proportion test, whose p here is not McNemar's."""
    before = run_of(tmp_path, "a", accuracy_record(HITS_A))
    after = run_of(tmp_path, "b", accuracy_record(HITS_B, data_key="other-data"))
    (change,) = compare_runs(before, after, 0.05).changes
    assert change.test == "two-proportion"
    assert change.p == pytest.approx(two_proportion_p(30, 40, 18, 40))
    assert change.p != pytest.approx(paired_slates(np.array(HITS_A), np.array(HITS_B))[2])
    shorter = run_of(tmp_path, "c", accuracy_record(HITS_B[:39]))
    (change,) = compare_runs(before, shorter, 0.05).changes
    assert change.test == "two-proportion" and change.p == pytest.approx(two_proportion_p(30, 40, 18, 39))


def test_slate_acc_without_per_slate_hits_is_judged_by_the_threshold_alone(tmp_path):
    bare_a, bare_b = accuracy_record(HITS_A), accuracy_record(HITS_B)
    bare_a["per_slate"], bare_b["per_slate"] = {}, {}
    (change,) = compare_runs(run_of(tmp_path, "a", bare_a), run_of(tmp_path, "b", bare_b), 0.05).changes
    assert change.test == "threshold" and change.p is None and change.regression


def test_a_cell_that_was_ok_and_failed_is_a_regression(tmp_path):
    before = run_of(tmp_path, "a", accuracy_record(HITS_A))
    after = run_of(tmp_path, "b", accuracy_record([], status="failed", error="boom"))
    comparison = compare_runs(before, after, 0.05)
    assert comparison.regressions == 1 and comparison.changes == []
    (line,) = comparison.status_changes
    assert "ok -> failed (boom)" in line and "mlp s0 " in line
    result = runner.invoke(app, ["compare", str(before), str(after)])
    assert result.exit_code == 1, result.output
    assert "REGRESSION status:" in result.stdout and "1 regression(s)" in result.stderr


def test_a_cell_that_failed_and_now_finishes_is_no_regression(tmp_path):
    before = run_of(tmp_path, "a", accuracy_record([], status="failed", error="boom"))
    after = run_of(tmp_path, "b", accuracy_record(HITS_A))
    comparison = compare_runs(before, after, 0.05)
    assert comparison.status_changes == [] and comparison.regressions == 0 and comparison.compared_cells == 0


def test_a_cell_that_failed_on_both_sides_is_neither_compared_nor_a_regression(tmp_path):
    failed = accuracy_record([], status="failed", error="boom")
    comparison = compare_runs(run_of(tmp_path, "a", failed), run_of(tmp_path, "b", failed), 0.05)
    assert comparison.status_changes == [] and comparison.regressions == 0 and comparison.compared_cells == 0


# Twenty timings whose slow side spreads far (a pause only ever slows a block) and whose fast side is tight.
LOPSIDED = [60.0, 70.0, 75.0, 80.0, 85.0, 88.0, 96.0, 97.0, 98.0, 99.0] + [100.0 + 0.1 * i for i in range(10)]


def test_a_quantile_half_width_reaches_as_far_as_the_longer_side_of_its_interval():
    low, high, _ = quantile_interval(LOPSIDED)
    value, half = quantile_half_width(LOPSIDED)
    assert value == pytest.approx(float(np.median(LOPSIDED)))
    assert value - low > 5 * (high - value), "the samples are lopsided: the lower side reaches further"
    assert half == pytest.approx(value - low)
    mirrored = [200.0 - v for v in LOPSIDED]  # the same interval, its long side now above the quantile
    assert quantile_half_width(mirrored)[1] == pytest.approx(half)


def test_a_timing_whose_interval_reaches_far_on_one_side_only_is_unstable():
    assert relative_half_width(LOPSIDED) == pytest.approx(quantile_half_width(LOPSIDED)[1] / np.median(LOPSIDED))
    assert relative_half_width(LOPSIDED) > 0.05 and is_unstable({"samples": LOPSIDED})
    mirrored = [200.0 - v for v in LOPSIDED]
    assert is_unstable({"samples": mirrored})
    tight = [100.0 + 0.1 * i for i in range(20)]
    assert not is_unstable({"samples": tight})


def test_the_catalog_direction_decides_which_change_is_worse():
    throughput, latency = lookup("train_samples_per_s"), lookup("latency_b1_p50_ms")
    assert throughput.worse(100.0, 90.0, 0.05) and not throughput.worse(100.0, 110.0, 0.05)
    assert latency.worse(10.0, 11.0, 0.05) and not latency.worse(10.0, 9.0, 0.05)
    assert not throughput.worse(100.0, 96.0, 0.05), "within the threshold"
    assert not lookup("parameters").worse(100.0, 1.0, 0.05), "a fact about the cell has no worse side"


def test_relative_change_is_against_the_size_of_the_value_before():
    assert relative_change(100.0, 90.0) == pytest.approx(-0.1) and relative_change(-100.0, -90.0) == pytest.approx(0.1)
    assert relative_change(0.0, 0.0) == 0.0 and relative_change(0.0, 1.0) == math.inf


def change(**fields) -> Change:
    values = dict(key="k", cell="c", name="train_samples_per_s", before=100.0, after=80.0, kind="speed", test="t")
    values |= dict(p=0.001, p_adjusted=0.001, resolved=True, flagged=True, worse=True, contended=False)
    return Change(**(values | {"regression": False} | fields))


@pytest.mark.parametrize(
    ("fields", "verdict"),
    [
        ({"regression": True}, "REGRESSION"),
        ({"flagged": False}, ""),
        ({"test": "no samples", "p": None, "p_adjusted": None}, "changed (untested: no timing samples)"),
        ({"p_adjusted": 0.2}, "noise (p 0.2 Holm)"),
        ({"p_adjusted": 0.05}, "noise (p 0.05 Holm)"),
        ({"kind": "accuracy", "name": "slate_acc", "p": 0.3, "p_adjusted": 0.3}, "noise (p 0.3)"),
        ({"resolved": False}, "worse, too noisy to call"),
        ({"contended": True}, "contended: not judged"),
        ({"contended": True, "kind": "accuracy", "name": "slate_acc"}, "worse"),
        ({"worse": False, "after": 120.0}, "better"),
        ({"worse": False, "resolved": False, "contended": True, "after": 120.0}, "contended: not judged"),
    ],
)
def test_each_verdict_says_why(fields, verdict):
    assert change(**fields).verdict == verdict
    assert change(**fields).relative == pytest.approx(relative_change(change(**fields).before, change(**fields).after))


def test_cells_of_one_run_only_are_listed_on_their_side(tmp_path):
    one, other = accuracy_record(HITS_A), accuracy_record(HITS_A)
    other["key"], other["config"]["seed"] = "another-cell", 7
    comparison = compare_runs(run_of(tmp_path, "a", one, other), run_of(tmp_path, "b", one), 0.05)
    assert comparison.only_b == [] and len(comparison.only_a) == 1
    assert "mlp s7 b" in comparison.only_a[0] and comparison.only_a[0].endswith("[another-]")  # the key's first 8
    assert comparison.compared_cells == 1 and comparison.regressions == 0
    reverse = compare_runs(run_of(tmp_path, "c", one), run_of(tmp_path, "d", one, other), 0.05)
    assert reverse.only_a == [] and len(reverse.only_b) == 1 and "[another-]" in reverse.only_b[0]


def test_a_change_within_the_threshold_is_compared_but_not_flagged(tmp_path):
    hits_b = HITS_A[:-11] + [False] + HITS_A[-10:]  # one hit fewer: 29 of 40, -3.3%
    (same,) = compare_runs(
        run_of(tmp_path, "a", accuracy_record(HITS_A)), run_of(tmp_path, "b", accuracy_record(hits_b)), 0.05
    ).changes
    assert not same.flagged and not same.worse and not same.regression and same.verdict == ""
    assert same.test == "McNemar" and same.p == 1.0


def test_counts_compare_exactly_and_say_when_a_side_has_none_or_varies():
    from bench.ab_verdict import DIFFERENT, SAME, compare_counts

    assert compare_counts([], [1]) == "n/a" and compare_counts([1], []) == "n/a"
    assert (
        compare_counts([1, 2], [1]) == "VARIES within a side" and compare_counts([1], [1, 2]) == "VARIES within a side"
    )
    assert compare_counts([3, 3], [3]) == SAME and compare_counts([3], [4, 4]) == DIFFERENT


def test_instruction_counts_are_different_only_when_the_sides_do_not_overlap():
    from bench.ab_verdict import DIFFERENT, INCONCLUSIVE, SAME, compare_instructions

    assert compare_instructions([], [1.0]) == "n/a" and compare_instructions([1.0], []) == "n/a"
    assert compare_instructions([2.0], [3.0], tolerance=0.5) == SAME, "a change of exactly the tolerance is the same"
    assert compare_instructions([100.0, 101.0], [150.0, 151.0]) == DIFFERENT
    assert compare_instructions([100.0, 101.0], [101.0, 300.0]) == INCONCLUSIVE, "touching sides overlap"
    assert compare_instructions([100.0, 101.0], [50.0, 51.0]) == DIFFERENT
    assert compare_instructions([100.0, 101.0], [50.0, 100.0]) == INCONCLUSIVE
