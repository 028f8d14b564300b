"""Speed verdicts of `bench ab` from its pairs of processes, and the exact comparison of deterministic counts.

Per cell and speed value, each pair gives one log ratio B/A of the two processes' values (each process's median
of its own samples). The pair's two processes ran back to back, so the ratio cancels the level the machine was
at in those seconds; the pairs are then judged as n independent differences:

- Wilcoxon's signed-rank test, exact, on the log ratios (no assumption of normality; a process slowed by a
  burst of other work moves one ratio, not the verdict);
- the Hodges-Lehmann estimate of the change with its distribution-free 95% interval (the median of the Walsh
  averages; the interval inverts the same exact test);
- Holm's correction across every value the A/B judges (its cells x 3 speed values).

Verdicts, with the threshold t (10% by default): REGRESSION or IMPROVEMENT (in the value's catalog direction)
when the change is significant after Holm and the estimate lies beyond +-t; SAME when the 95% interval lies
inside +-t; INCONCLUSIVE otherwise, with the smallest change these pairs could detect and the pairs that a change
of t would need (a normal approximation of the test's power).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from bench.catalog import lookup
from bench.stats import SIGNIFICANCE, detectable_shift, hodges_lehmann, holm, pairs_needed, signed_rank_p

SPEED_VALUES = ("train_samples_per_s", "infer_samples_per_s", "latency_b1_p50_ms")  # catalog names
DETERMINISTIC_VALUES = ("parameters", "train_flops_per_sample", "infer_flops_per_sample")
REGRESSION, IMPROVEMENT, SAME, INCONCLUSIVE = "REGRESSION", "IMPROVEMENT", "SAME", "INCONCLUSIVE"
DIFFERENT = "DIFFERENT"  # deterministic counts that differ


@dataclass(frozen=True)
class PairValue:
    """One pair's values of one speed measurement: side A's process, side B's, and whether either ran contended."""

    pair: int
    a: float
    b: float
    contended: bool = False

    @property
    def log_ratio(self) -> float:
        return math.log(self.b / self.a)


@dataclass
class Judgement:
    cell: int
    name: str  # catalog name of the speed value
    pairs: list[PairValue]
    estimate: float = math.nan  # Hodges-Lehmann change B/A - 1
    low: float = math.nan  # its 95% interval (nan: too few pairs for one)
    high: float = math.nan
    coverage: float = 0.0
    p: float = math.nan  # exact signed-rank p-value, then Holm's
    p_holm: float = math.nan
    spread: float = math.nan  # standard deviation of the log ratios (about the CV of the per-pair ratio)
    detectable: float = math.nan  # the smallest change (relative) these pairs detect with 80% power
    needed: int | None = None  # the pairs a change of the threshold would need
    verdict: str = INCONCLUSIVE

    @property
    def contended(self) -> int:
        return sum(p.contended for p in self.pairs)

    @property
    def worse(self) -> bool:
        """The estimate points to the worse side in the value's direction (lower throughput, higher latency)."""
        return lookup(self.name).direction * self.estimate < 0


def judge(
    values: dict[tuple[int, str], list[PairValue]], threshold: float, alpha: float = SIGNIFICANCE
) -> list[Judgement]:
    """The verdict of every (cell, speed value) from its pairs, Holm-corrected across all of them."""
    judgements = [_estimate(cell, name, pairs) for (cell, name), pairs in sorted(values.items())]
    tested = [j for j in judgements if not math.isnan(j.p)]
    for judgement, adjusted in zip(tested, holm([j.p for j in tested]), strict=True):
        judgement.p_holm = adjusted
    strictest = alpha / max(1, len(tested))  # Holm's first step: what "detectable" has to pass
    for judgement in judgements:
        _decide(judgement, threshold, alpha, strictest)
    return judgements


def _estimate(cell: int, name: str, pairs: list[PairValue]) -> Judgement:
    judgement = Judgement(cell, name, pairs)
    d = [p.log_ratio for p in pairs if p.a > 0 and p.b > 0]
    if not d:
        return judgement
    judgement.p = signed_rank_p(d)
    estimate, low, high, judgement.coverage = hodges_lehmann(d)
    judgement.estimate, judgement.low, judgement.high = math.expm1(estimate), math.expm1(low), math.expm1(high)
    judgement.spread = float(np.std(d, ddof=1)) if len(d) > 1 else math.nan
    return judgement


def _decide(j: Judgement, threshold: float, alpha: float, strictest: float) -> None:
    n = sum(1 for p in j.pairs if p.a > 0 and p.b > 0)
    j.detectable = math.expm1(detectable_shift(j.spread, n, strictest)) if n else math.inf
    j.needed = pairs_needed(j.spread, math.log1p(threshold), strictest)
    if j.p_holm < alpha and abs(j.estimate) > threshold:
        j.verdict = REGRESSION if j.worse else IMPROVEMENT
    elif j.low > -threshold and j.high < threshold:  # nan (no interval) compares False
        j.verdict = SAME
    else:
        j.verdict = INCONCLUSIVE


def compare_counts(a: list[Any], b: list[Any]) -> str:
    """SAME or DIFFERENT for a deterministic count (parameters, FLOPs per sample) seen by each side's processes;
    a side whose processes disagree among themselves is not deterministic, and missing counts are n/a."""
    if not a or not b:
        return "n/a"
    if len(set(a)) > 1 or len(set(b)) > 1:
        return "VARIES within a side"
    return SAME if a[0] == b[0] else DIFFERENT


INSTRUCTION_TOLERANCE = 0.01  # instruction counts within 1% are the same work (their A/A spread: docs)


def compare_instructions(a: list[float], b: list[float], tolerance: float = INSTRUCTION_TOLERANCE) -> str:
    """SAME, DIFFERENT or INCONCLUSIVE for instruction counts of each side's valgrind runs: DIFFERENT when the
    medians differ beyond ``tolerance`` and every count of one side lies beyond every count of the other; SAME
    when the medians are within ``tolerance``; else INCONCLUSIVE (the runs of a side spread too far)."""
    if not a or not b:
        return "n/a"
    change = float(np.median(b)) / float(np.median(a)) - 1
    if abs(change) <= tolerance:
        return SAME
    separated = min(b) > max(a) if change > 0 else max(b) < min(a)
    return DIFFERENT if separated else INCONCLUSIVE
