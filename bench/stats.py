"""Intervals and paired tests used by reports and comparisons."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from scipy import stats

CONFIDENCE = 0.95
SIGNIFICANCE = 0.05  # the level of every test the report, tune.md and `bench compare` call significant
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


def slate_estimate(numerator: np.ndarray, denominator: np.ndarray | None = None) -> tuple[float, float]:
    """A value over test slates and the half-width of its 95% normal interval: the mean of ``numerator``, or the
    ratio of the sums of ``numerator`` and ``denominator`` (delta method: a ratio of two means varies as
    (numerator - ratio x denominator) / mean(denominator) does). nan where the denominator sums to <= 0 and, for
    the half-width, below two slates."""
    values = np.asarray(numerator, dtype=float)
    if denominator is None:
        ratio, spread = float(values.mean()) if len(values) else math.nan, values
    else:
        total = float(np.sum(denominator))
        if not total > 0:
            return math.nan, math.nan
        ratio = float(values.sum()) / total
        spread = (values - ratio * np.asarray(denominator, dtype=float)) / (total / len(values))
    half = Z95 * spread.std(ddof=1) / math.sqrt(len(spread)) if len(spread) > 1 else math.nan
    return ratio, float(half)


def paired_values(
    values_a: np.ndarray, values_b: np.ndarray, denominator: np.ndarray | None = None
) -> tuple[float, float, float]:
    """Per-slate paired comparison on one test split of a mean (or of a ratio of sums over the same
    ``denominator``): difference, 95% half-width (``slate_estimate`` of the per-slate differences), and the
    two-sided p-value of the paired t-test on those differences (a ratio's difference is 0 exactly when their
    mean is)."""
    diff = np.asarray(values_a, dtype=float) - np.asarray(values_b, dtype=float)
    estimate, half = slate_estimate(diff, denominator)
    if len(diff) < 2:
        return estimate, half, math.nan
    if np.all(diff == diff[0]):
        return estimate, half, 1.0 if diff[0] == 0 else 0.0
    return estimate, half, float(stats.ttest_1samp(diff, 0.0).pvalue)


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

TIMING_LEVEL = 0.95  # coverage asked of the interval of a timing quantile (median, p95...)
UNSTABLE_HALF_WIDTH = 0.05  # a timing whose interval reaches further than +-5% of its value is unstable
SIGNIFICANT_DIGITS = 4  # raw timing samples are kept rounded to this many significant digits


def compact_samples(values: list[float]) -> list[float]:
    """Timing samples as kept in a record: floats rounded to 4 significant digits (0.05% at worst,
    far below run-to-run noise), short enough to keep hundreds per record."""
    return [float(f"{v:.{SIGNIFICANT_DIGITS}g}") for v in values]


def quantile_interval(
    values: list[float], q: float = 0.5, level: float = TIMING_LEVEL
) -> tuple[float, float, float] | None:
    """Distribution-free interval of the ``q``-quantile from order statistics: (low, high, coverage).

    Of n independent samples, K ~ Binomial(n, q) lie below the true q-quantile, whatever the
    distribution, so the interval from the i-th to the j-th smallest (0-based) holds it with probability
    P(i < K <= j). i and j are taken as far in as each tail's probability allows, (1 - level) / 2 each,
    so the coverage is >= ``level``; where a tail cannot be cut that fine there is no interval (None).
    At 95% the median needs n >= 6 samples (n = 5 covers 93.75% at best), p95 n >= 72 and p99 n >= 368:
    the p99 of 200 latency requests has no interval. Chosen over a bootstrap because
    timing samples are few (7 to a few dozen blocks) and skewed (a pause only ever slows a block down): a
    bootstrap interval from few samples is lumpy and under-covers, while this one has its stated
    coverage exactly. Like asv's ``quantile_ci``.
    """
    ordered = np.sort(np.asarray(values, dtype=float))
    n = len(ordered)
    if n == 0:
        return None
    below = stats.binom.cdf(np.arange(n), n, q)  # below[k] = P(K <= k)
    tail = (1 - level) / 2
    lows, highs = np.flatnonzero(below <= tail), np.flatnonzero(below >= 1 - tail)
    if len(lows) == 0 or len(highs) == 0:
        return None
    i, j = int(lows[-1]), int(highs[0])
    return float(ordered[i]), float(ordered[j]), float(below[j] - below[i])


def timing_summary(values: list[float], segments: list[int] | None = None) -> dict[str, Any]:
    """One speed measurement as a record keeps it: median, quartiles, min/max, sample count, the 95%
    order-statistic interval of the median (null below 6 samples) and the samples themselves; with
    ``segments``, how many consecutive samples each stretch of time took (the serving bursts, the training
    epochs), which ``bench compare`` tests on.

    Computed from the compacted samples, so a summary recomputed from a record matches it exactly.
    """
    samples = compact_samples([v for v in values if math.isfinite(v)])
    if not samples:
        return {"n": 0, "samples": []}
    kept = {"segments": [int(size) for size in segments]} if segments and sum(segments) == len(samples) else {}
    array = np.asarray(samples)
    interval = quantile_interval(samples, 0.5)
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
        **kept,
    }


def pool_timings(summaries: list[dict[str, Any]]) -> dict[str, Any]:
    """One summary from the timing samples of several cells of the same shape (e.g. its seeds).

    Seeds change the data and the initial weights, not the speed; what varies between timings is the
    timing itself, so the samples are pooled and summarised once (no t-interval over seed means).
    """
    return timing_summary([v for summary in summaries for v in summary.get("samples", [])])


def quantile_half_width(samples: list[float], q: float = 0.5) -> tuple[float, float]:
    """The samples' ``q``-quantile and how far its 95% interval reaches from it (nan where there is no
    interval: too few samples for that quantile)."""
    if not samples:
        return math.nan, math.nan
    value = float(np.percentile(samples, 100 * q))
    interval = quantile_interval(samples, q)
    return value, max(value - interval[0], interval[1] - value) if interval else math.nan


def relative_half_width(samples: list[float], q: float = 0.5) -> float | None:
    """``quantile_half_width`` as a fraction of the quantile; None where there is no interval."""
    value, half = quantile_half_width(samples, q)
    if math.isnan(half) or not value:
        return None
    return half / abs(value)


def is_unstable(summary: dict[str, Any], half_width: float = UNSTABLE_HALF_WIDTH, q: float = 0.5) -> bool:
    """Whether the 95% interval of a timing's ``q``-quantile (its median by default) reaches further than
    +-5% of it. A quantile with no interval counts as unstable: nothing shows it is stable."""
    width = relative_half_width(summary.get("samples") or [], q)
    return width is None or width > half_width


# --- Segments of a cell's timing samples ----------------------------------------------------------------------


def shares(count: int, parts: int) -> list[int]:
    """How ``count`` timed samples are dealt into ``parts`` consecutive segments (bursts, epochs), as equal as
    they can be, the larger ones first (``numpy.array_split``'s rule). Both the samplers that take the samples
    and the comparisons that read them back use it."""
    return [len(part) for part in np.array_split(np.arange(count), max(1, parts))]


def segments(samples: list[float], sizes: list[int]) -> list[list[float]]:
    """Consecutive samples cut into segments of ``sizes`` (empty segments left out)."""
    cuts = np.cumsum([0, *sizes])
    return [list(samples[a:b]) for a, b in zip(cuts[:-1], cuts[1:], strict=True) if b > a]


# --- Paired judgement across processes ------------------------------------------------------------------------
# One pair = one process of each side, back to back; its log ratio B/A cancels what the two processes shared
# (the machine's level of the moment). The statistics below work on n such differences.


def signed_rank_null(ranks: np.ndarray) -> np.ndarray:
    """Exact null distribution of the signed-rank statistic T+ (the sum of the ranks of the positive
    differences) when each difference is as likely positive as negative: ``distribution[t]`` = P(T+ = t).
    ``ranks`` are integers (doubled mid-ranks where |differences| tie). Built by convolution, one rank at a
    time: O(n * sum(ranks)), a few milliseconds for a hundred pairs."""
    distribution = np.ones(1)
    for rank in np.asarray(ranks, dtype=int):
        grown = np.zeros(len(distribution) + rank)
        grown[: len(distribution)] += 0.5 * distribution
        grown[rank:] += 0.5 * distribution
        distribution = grown
    return distribution


def signed_rank_p(differences: list[float]) -> float:
    """Two-sided p-value of Wilcoxon's signed-rank test, exact for any n (zeros dropped, tied |differences|
    given mid-ranks; the null distribution is then that of those ranks, so ties keep it exact)."""
    d = np.asarray(differences, dtype=float)
    d = d[d != 0]
    if len(d) == 0:
        return 1.0
    doubled = np.rint(2 * stats.rankdata(np.abs(d))).astype(int)  # mid-ranks are halves: doubled, integers
    distribution = signed_rank_null(doubled)
    centre = doubled.sum() / 2
    observed = abs(doubled[d > 0].sum() - centre)
    as_far = np.abs(np.arange(len(distribution)) - centre) >= observed - 1e-9
    return float(min(1.0, distribution[as_far].sum()))


def walsh_averages(differences: list[float]) -> np.ndarray:
    """The n(n+1)/2 averages (d_i + d_j) / 2, i <= j, sorted."""
    d = np.asarray(differences, dtype=float)
    rows, columns = np.triu_indices(len(d))
    return np.sort((d[rows] + d[columns]) / 2)


def hodges_lehmann(differences: list[float], level: float = CONFIDENCE) -> tuple[float, float, float, float] | None:
    """The Hodges-Lehmann estimate of the shift (the median of the Walsh averages) with its distribution-free
    interval: (estimate, low, high, coverage), or None for no difference.

    The interval holds every shift that the exact signed-rank test would not reject: from the (c+1)-th smallest
    to the (c+1)-th largest Walsh average, c the largest count with P(T+ <= c) <= (1 - level) / 2 under the null
    (Hollander and Wolfe). Its coverage is exact for continuous differences and at least ``level``; with too few
    differences for that level (five or fewer at 95%) low and high are nan and the coverage 0.
    """
    if len(differences) == 0:
        return None
    walsh = walsh_averages(differences)
    estimate = float(np.median(walsh))
    n = len(differences)
    below = np.cumsum(signed_rank_null(np.arange(1, n + 1)))  # below[c] = P(T+ <= c)
    allowed = np.flatnonzero(below <= (1 - level) / 2)
    if len(allowed) == 0:
        return estimate, math.nan, math.nan, 0.0
    c = int(allowed[-1])
    return estimate, float(walsh[c]), float(walsh[len(walsh) - 1 - c]), float(1 - 2 * below[c])


def holm(p_values: list[float]) -> list[float]:
    """Holm's step-down adjusted p-values: the family-wise error stays within alpha whatever the dependence
    between the tests; a value is significant when its adjusted p-value is below alpha."""
    p = np.asarray(p_values, dtype=float)
    m = len(p)
    if m == 0:
        return []
    order = np.argsort(p, kind="stable")
    stepped = np.minimum(1.0, np.maximum.accumulate((m - np.arange(m)) * p[order]))
    adjusted = np.empty(m)
    adjusted[order] = stepped
    return [float(v) for v in adjusted]


SIGNED_RANK_EFFICIENCY = 3 / math.pi  # the signed-rank test's efficiency relative to the paired t-test (normal data)
POWER = 0.8  # the chance of a verdict that "detectable" and "pairs needed" speak about


def fewest_pairs(alpha: float) -> int:
    """The fewest pairs with which the exact signed-rank test can reach p < alpha at all (its smallest
    two-sided p-value is 2 / 2^n)."""
    return math.floor(math.log2(2 / alpha)) + 1


def detectable_shift(spread: float, pairs: int, alpha: float, power: float = POWER) -> float:
    """The smallest shift that ``pairs`` differences with standard deviation ``spread`` detect at ``alpha``
    with probability ``power`` (normal approximation, discounted by the signed-rank test's efficiency); inf
    where the exact test cannot reach alpha with so few pairs, nan without a spread."""
    if pairs < fewest_pairs(alpha):
        return math.inf
    if not math.isfinite(spread):
        return math.nan
    z = stats.norm.ppf(1 - alpha / 2) + stats.norm.ppf(power)
    return float(z * spread / math.sqrt(pairs * SIGNED_RANK_EFFICIENCY))


def pairs_needed(spread: float, shift: float, alpha: float, power: float = POWER) -> int | None:
    """The pairs with which ``detectable_shift`` falls to ``shift`` (None without a spread)."""
    if not math.isfinite(spread) or shift <= 0:
        return None
    z = stats.norm.ppf(1 - alpha / 2) + stats.norm.ppf(power)
    return max(fewest_pairs(alpha), math.ceil((z * spread / shift) ** 2 / SIGNED_RANK_EFFICIENCY))
