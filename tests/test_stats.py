"""bench/stats.py's intervals and tests against their textbook definitions (scipy, numpy, by hand), edge cases
included: no value, one value, no spread."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from bench.stats import (
    binomial_interval,
    compact_samples,
    detectable_shift,
    fewest_pairs,
    hodges_lehmann,
    mean_interval,
    paired_seeds,
    paired_slates,
    paired_values,
    pairs_needed,
    pool_timings,
    segments,
    shares,
    signed_rank_p,
    slate_estimate,
    timing_summary,
    two_proportion_p,
    walsh_averages,
)

Z = stats.norm.ppf(0.975)


def test_mean_interval_is_students_t():
    values = [1.0, 2.0, 4.0, 7.0]
    mean, half = mean_interval(values)
    low, high = stats.t.interval(0.95, 3, loc=np.mean(values), scale=stats.sem(values))
    assert mean == pytest.approx(3.5) and half == pytest.approx((high - low) / 2)
    assert mean_interval([2.0])[0] == 2.0 and math.isnan(mean_interval([2.0])[1])
    assert all(math.isnan(v) for v in mean_interval([]))


def test_binomial_interval_is_the_normal_approximation():
    assert binomial_interval(0.3, 100) == pytest.approx(Z * math.sqrt(0.3 * 0.7 / 100))
    assert binomial_interval(1.0, 50) == 0.0 and math.isnan(binomial_interval(0.5, 0))


def test_paired_slates_is_the_mean_difference_with_mcnemars_exact_p():
    a = np.array([1, 1, 1, 1, 1, 0, 0, 1, 0, 1], dtype=bool)
    b = np.array([0, 0, 0, 1, 1, 0, 1, 1, 0, 0], dtype=bool)
    diff = a.astype(float) - b.astype(float)
    mean, half, p = paired_slates(a, b)
    assert mean == pytest.approx(diff.mean()) and half == pytest.approx(Z * diff.std(ddof=1) / math.sqrt(10))
    assert p == pytest.approx(stats.binomtest(4, 5).pvalue)
    assert paired_slates(a, a)[2] == 1.0 and math.isnan(paired_slates(a[:1], b[:1])[1])


def test_a_mean_over_slates_and_a_ratio_of_sums_by_the_delta_method():
    values, below = np.array([1.0, 3.0, 2.0, 6.0]), np.array([2.0, 4.0, 4.0, 6.0])
    mean, half = slate_estimate(values)
    assert mean == pytest.approx(3.0) and half == pytest.approx(Z * values.std(ddof=1) / 2)
    ratio, half = slate_estimate(values, below)
    assert ratio == pytest.approx(12.0 / 16.0)
    linearised = (values - ratio * below) / below.mean()
    assert half == pytest.approx(Z * linearised.std(ddof=1) / 2)
    assert all(math.isnan(v) for v in slate_estimate(values, np.zeros(4)))
    assert all(math.isnan(v) for v in slate_estimate(values, -below))
    assert slate_estimate(np.array([2.0]))[0] == 2.0 and math.isnan(slate_estimate(np.array([2.0]))[1])
    assert all(math.isnan(v) for v in slate_estimate(np.array([])))


def test_paired_values_is_the_paired_t_test_and_handles_no_spread():
    a, b = np.array([1.0, 2.5, 3.0, 4.5, 2.0]), np.array([0.5, 2.0, 3.5, 3.0, 1.0])
    diff, p = a - b, stats.ttest_rel(a, b).pvalue
    assert paired_values(a, b) == pytest.approx((diff.mean(), Z * diff.std(ddof=1) / math.sqrt(5), p))
    assert paired_values(a, a)[2] == 1.0 and paired_values(a + 1.0, a)[2] == 0.0
    assert math.isnan(paired_values(a[:1], b[:1])[2])
    ratio = paired_values(a, b, np.ones(5) * 2.0)
    assert ratio[0] == pytest.approx(diff.sum() / 10.0) and ratio[2] == pytest.approx(p)


def test_two_proportions_pooled_z_test():
    pooled = 0.6
    z = (0.7 - 0.5) / math.sqrt(pooled * (1 - pooled) * (1 / 100 + 1 / 100))
    assert two_proportion_p(70, 100, 50, 100) == pytest.approx(2 * stats.norm.sf(z))
    assert two_proportion_p(30, 60, 50, 100) == pytest.approx(1.0)
    assert two_proportion_p(0, 10, 0, 20) == 1.0 and two_proportion_p(10, 10, 20, 20) == 1.0
    assert math.isnan(two_proportion_p(1, 0, 1, 2)) and math.isnan(two_proportion_p(1, 2, 1, 0))


def test_paired_seeds_is_the_paired_t_test_over_seeds():
    a, b = [0.5, 0.6, 0.55, 0.7], [0.45, 0.58, 0.5, 0.6]
    diff = np.subtract(a, b)
    mean, half, p = paired_seeds(a, b)
    assert mean == pytest.approx(diff.mean()) and half == pytest.approx(mean_interval(list(diff))[1])
    assert p == pytest.approx(stats.ttest_rel(a, b).pvalue)
    assert paired_seeds([0.5, 0.6], [0.4, 0.5]) == pytest.approx((0.1, 0.0, 0.0))
    assert paired_seeds([0.5, 0.6], [0.5, 0.6]) == (0.0, 0.0, 1.0)
    one = paired_seeds([0.5], [0.4])
    assert one[0] == pytest.approx(0.1) and math.isnan(one[1]) and math.isnan(one[2])


def test_samples_are_kept_to_four_significant_digits():
    assert compact_samples([123456.0, 0.000123456, 1.0]) == [123500.0, 0.0001235, 1.0]


def test_a_summary_keeps_its_segments_only_when_they_count_its_samples():
    values = [float(v) for v in range(1, 13)]
    summary = timing_summary(values, [4, 4, 4])
    assert summary["segments"] == [4, 4, 4] and summary["n"] == 12
    assert (summary["median"], summary["q1"], summary["q3"]) == (6.5, 3.75, 9.25)
    assert (summary["min"], summary["max"]) == (1.0, 12.0)
    assert "segments" not in timing_summary(values, [4, 4]) and "segments" not in timing_summary(values)
    assert timing_summary([float("nan"), 1.0, float("inf")])["samples"] == [1.0]
    pooled = pool_timings([timing_summary(values[:6]), timing_summary(values[6:]), {}])
    assert pooled["samples"] == values and pooled["median"] == 6.5


def test_samples_are_dealt_into_segments_the_larger_first():
    assert shares(10, 3) == [4, 3, 3] and shares(2, 3) == [1, 1, 0] and shares(5, 0) == [5]
    assert segments([1.0, 2.0, 3.0, 4.0, 5.0], [2, 0, 3]) == [[1.0, 2.0], [3.0, 4.0, 5.0]]


def test_walsh_averages_and_the_hodges_lehmann_estimate():
    d = [1.0, 3.0, -2.0]
    assert walsh_averages(d).tolist() == [-2.0, -0.5, 0.5, 1.0, 2.0, 3.0]
    estimate, low, high, coverage = hodges_lehmann(d)
    assert estimate == pytest.approx(0.75) and math.isnan(low) and math.isnan(high) and coverage == 0.0
    assert hodges_lehmann([]) is None
    assert signed_rank_p([0.0, 0.0]) == 1.0 and signed_rank_p([]) == 1.0


def test_what_a_number_of_pairs_can_detect():
    assert fewest_pairs(0.05) == 6 and fewest_pairs(0.01) == 8
    z = stats.norm.ppf(0.975) + stats.norm.ppf(0.8)
    assert detectable_shift(0.1, 10, 0.05) == pytest.approx(z * 0.1 / math.sqrt(10 * 3 / math.pi))
    assert detectable_shift(0.1, 5, 0.05) == math.inf and math.isnan(detectable_shift(math.nan, 10, 0.05))
    needed = pairs_needed(0.1, 0.05, 0.05)
    assert needed == math.ceil((z * 0.1 / 0.05) ** 2 / (3 / math.pi))
    assert detectable_shift(0.1, needed, 0.05) <= 0.05 < detectable_shift(0.1, needed - 1, 0.05)
    assert pairs_needed(0.001, 0.5, 0.05) == 6, "never fewer than the exact test can use"
    assert pairs_needed(math.nan, 0.05, 0.05) is None and pairs_needed(0.1, 0.0, 0.05) is None
