"""Intervals and paired tests used by reports and comparisons."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from scipy import stats

CONFIDENCE = 0.95
Z95 = float(stats.norm.ppf(0.5 + CONFIDENCE / 2))  # two-sided normal quantile of the 95% intervals


def mean_interval(values: list[float]) -> tuple[float, float]:
    """Mean and the half-width of its 95% Student-t interval (nan for one value)."""
    array = np.asarray(values, dtype=float)
    if len(array) < 2:
        return float(array.mean()) if len(array) else math.nan, math.nan
    half = stats.t.ppf(0.5 + CONFIDENCE / 2, len(array) - 1) * array.std(ddof=1) / math.sqrt(len(array))
    return float(array.mean()), float(half)


def binomial_interval(p: float, n: int) -> float:
    """Half-width of the 95% normal-approximation interval of a proportion."""
    return Z95 * math.sqrt(max(p * (1 - p), 0.0) / n) if n else math.nan


def paired_slates(hits_a: np.ndarray, hits_b: np.ndarray) -> tuple[float, float, float]:
    """Per-slate paired comparison on one test split: mean difference, 95% half-width, and
    the two-sided p-value of McNemar's exact test (binomial test on discordant slates)."""
    diff = hits_a.astype(float) - hits_b.astype(float)
    half = Z95 * diff.std(ddof=1) / math.sqrt(len(diff)) if len(diff) > 1 else math.nan
    only_a, only_b = int(np.sum(diff > 0)), int(np.sum(diff < 0))
    p = stats.binomtest(only_a, only_a + only_b).pvalue if only_a + only_b else 1.0
    return float(diff.mean()), float(half), float(p)


def two_proportion_p(hits_a: int, n_a: int, hits_b: int, n_b: int) -> float:
    """Two-sided p-value of the pooled two-proportion z-test (two accuracies on different slates)."""
    if not n_a or not n_b:
        return math.nan
    pooled = (hits_a + hits_b) / (n_a + n_b)
    se = math.sqrt(pooled * (1 - pooled) * (1 / n_a + 1 / n_b))
    if se == 0:
        return 1.0
    z = (hits_a / n_a - hits_b / n_b) / se
    return float(2 * stats.norm.sf(abs(z)))


def paired_seeds(values_a: list[float], values_b: list[float]) -> tuple[float, float, float]:
    """Paired comparison over seeds: mean difference, 95% t half-width, paired t-test p-value."""
    diff = np.asarray(values_a, dtype=float) - np.asarray(values_b, dtype=float)
    mean, half = mean_interval(list(diff))
    if len(diff) < 2:
        return mean, math.nan, math.nan
    if np.allclose(diff, diff[0]):
        return mean, 0.0, 0.0 if diff[0] != 0 else 1.0
    return mean, half, float(stats.ttest_rel(values_a, values_b).pvalue)


# --- Timing samples -------------------------------------------------------------------------------------------

MEDIAN_LEVEL = 0.95  # coverage asked of the interval of a timing median
UNSTABLE_HALF_WIDTH = 0.05  # a timing whose interval reaches further than +-5% of its median is unstable
SIGNIFICANT_DIGITS = 4  # raw timing samples are kept rounded to this many significant digits


def compact_samples(values: list[float]) -> list[float]:
    """Timing samples as kept in a record: floats rounded to 4 significant digits (0.05% at worst,
    far below run-to-run noise), short enough to keep hundreds per record."""
    return [float(f"{v:.{SIGNIFICANT_DIGITS}g}") for v in values]


def median_interval(values: list[float], level: float = MEDIAN_LEVEL) -> tuple[float, float, float] | None:
    """Distribution-free interval of the median from order statistics: (low, high, coverage).

    The interval between the r-th smallest and the r-th largest of n independent samples holds the
    true median with probability P(r <= K <= n - r), K ~ Binomial(n, 1/2), whatever the distribution;
    r is the largest rank whose coverage is still >= ``level``. Chosen over a bootstrap because timing
    samples are few (7 to a few dozen blocks) and skewed (a pause only ever slows a block down): a
    bootstrap interval of a median from few samples is lumpy and under-covers, while this one has its
    stated coverage exactly. It needs n >= 6 at 95% (n = 5 covers 93.75% at best); with fewer samples
    there is no interval (None). Like asv's ``quantile_ci``.
    """
    ordered = np.sort(np.asarray(values, dtype=float))
    n = len(ordered)
    if n == 0:
        return None
    tail = stats.binom.cdf(np.arange(n), n, 0.5)  # tail[k] = P(K <= k)
    ranks = np.flatnonzero(2 * tail <= 1 - level)  # k = r - 1 with coverage 1 - 2 P(K <= r - 1) >= level
    if len(ranks) == 0:
        return None
    k = int(ranks[-1])
    return float(ordered[k]), float(ordered[n - 1 - k]), float(1 - 2 * tail[k])


def timing_summary(values: list[float]) -> dict[str, Any]:
    """One speed measurement as a record keeps it: median, quartiles, min/max, sample count, the 95%
    order-statistic interval of the median (null below 6 samples) and the samples themselves.

    Computed from the compacted samples, so a summary recomputed from a record matches it exactly.
    """
    samples = compact_samples([v for v in values if math.isfinite(v)])
    if not samples:
        return {"n": 0, "samples": []}
    array = np.asarray(samples)
    interval = median_interval(samples)
    q1, median, q3 = np.percentile(array, [25, 50, 75])
    return {
        "median": float(median),
        "q1": float(q1),
        "q3": float(q3),
        "min": float(array.min()),
        "max": float(array.max()),
        "n": len(samples),
        "ci_low": interval[0] if interval else None,
        "ci_high": interval[1] if interval else None,
        "ci_coverage": interval[2] if interval else None,
        "samples": samples,
    }


def pool_timings(summaries: list[dict[str, Any]]) -> dict[str, Any]:
    """One summary from the timing samples of several cells of the same shape (e.g. its seeds).

    Seeds change the data and the initial weights, not the speed; what varies between timings is the
    timing itself, so the samples are pooled and summarised once (no t-interval over seed means).
    """
    return timing_summary([v for summary in summaries for v in summary.get("samples", [])])


def is_unstable(summary: dict[str, Any], half_width: float = UNSTABLE_HALF_WIDTH) -> bool:
    """Whether a timing's 95% interval reaches further than +-5% of its median from the median.

    A timing with no interval (fewer than 6 samples) counts as unstable: nothing shows it is stable.
    """
    low, high, median = summary.get("ci_low"), summary.get("ci_high"), summary.get("median")
    if low is None or high is None or not median:
        return True
    return max(median - low, high - median) > half_width * abs(median)
