"""Intervals and paired tests used by reports and comparisons."""

from __future__ import annotations

import math

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


def paired_seeds(values_a: list[float], values_b: list[float]) -> tuple[float, float, float]:
    """Paired comparison over seeds: mean difference, 95% t half-width, paired t-test p-value."""
    diff = np.asarray(values_a, dtype=float) - np.asarray(values_b, dtype=float)
    mean, half = mean_interval(list(diff))
    if len(diff) < 2:
        return mean, math.nan, math.nan
    if np.allclose(diff, diff[0]):
        return mean, 0.0, 0.0 if diff[0] != 0 else 1.0
    return mean, half, float(stats.ttest_rel(values_a, values_b).pvalue)
