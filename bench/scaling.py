"""How cost grows with a shape axis: fitted log-log slopes (scaling exponents) with 95% intervals, beside the slope the
counted FLOPs give, and the largest shape that trained within the memory budget.

The fit (``fit_exponent``): each point's value is the median of its samples (timing samples pooled over seeds, or
the seeds' values for memory); the exponent is the least-squares slope of log(value) on log(axis value). Its 95%
interval is the wider of two:

- the regression interval (Student t with n - 2 degrees of freedom on the residuals): it sees how far the points lie
  from a power law, including the level shifts of the machine between cells, which no cell's own samples can see;
- a bootstrap over each point's own samples (resampled with replacement, medians refitted, 2.5 and 97.5
  percentiles): it sees how uncertain each median is, which a few points that happen to lie on a line would hide.

A fit is stated only where that interval is at most ``MAX_INTERVAL_WIDTH`` wide (0.5: enough to tell S^1 from
S^1.5 and S^2); a wider one reads "not fitted: too noisy", and fewer than ``MIN_POINTS`` points, or a value <= 0
(a memory that did not grow over the baseline), "not fitted" with its reason.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from bench.stats import CONFIDENCE
from bench.tables import AXIS_LABELS, PEAK_MEMORY

MIN_POINTS = 3
MAX_INTERVAL_WIDTH = 0.5
BOOTSTRAP_DRAWS = 2000
# Shape axes whose cost a power law describes, and the letter a slope is written with (T^1.8).
SHAPE_SYMBOLS = {"slate_length": "T", "candidates": "S", "batch_size": "B", "user_dim": "U", "item_dim": "F"}


@dataclass(frozen=True)
class Fit:
    """A fitted exponent with its 95% interval, or why there is none (``reason``)."""

    slope: float = math.nan
    low: float = math.nan
    high: float = math.nan
    points: int = 0
    reason: str | None = None  # None: fitted
    centre: tuple[float, float] = (math.nan, math.nan)  # (mean log axis value, mean log cost): the line goes through it

    @property
    def fitted(self) -> bool:
        return self.reason is None


def _slopes(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Least-squares slopes of each row of ``y`` on ``x``."""
    centred = x - x.mean()
    return (y - y.mean(axis=-1, keepdims=True)) @ centred / (centred @ centred)


def _bootstrap_interval(x: np.ndarray, samples: list[np.ndarray], seed: int) -> tuple[float, float]:
    """Percentile interval of the slope when each point's samples are drawn again with replacement."""
    rng = np.random.default_rng(seed)
    medians = np.column_stack(
        [np.median(s[rng.integers(0, len(s), size=(BOOTSTRAP_DRAWS, len(s)))], axis=1) for s in samples]
    )
    slopes = _slopes(x, np.log(medians))
    tail = 100 * (1 - CONFIDENCE) / 2
    return float(np.percentile(slopes, tail)), float(np.percentile(slopes, 100 - tail))


def fit_exponent(axis_values: list[float], samples: list[list[float]], seed: int = 0) -> Fit:
    """The slope of log(median of each point's samples) on log(axis value), with its 95% interval (module doc)."""
    arrays = [np.asarray(s, dtype=float) for s in samples]
    arrays = [s[np.isfinite(s)] for s in arrays]
    kept = [(v, s) for v, s in zip(axis_values, arrays, strict=True) if len(s)]
    if len(kept) < MIN_POINTS:
        return Fit(points=len(kept), reason=f"{len(kept)} point(s), a fit needs {MIN_POINTS}")
    if any((s <= 0).any() for _, s in kept):
        return Fit(points=len(kept), reason="a value <= 0 has no logarithm")
    x = np.log([float(v) for v, _ in kept])
    regression = stats.linregress(x, np.log([np.median(s) for _, s in kept]))
    t = stats.t.ppf(0.5 + CONFIDENCE / 2, len(x) - 2)
    low, high = regression.slope - t * regression.stderr, regression.slope + t * regression.stderr
    boot_low, boot_high = _bootstrap_interval(x, [s for _, s in kept], seed)
    low, high = min(low, boot_low), max(high, boot_high)
    reason = f"too noisy (interval [{low:.2f}, {high:.2f}])" if high - low > MAX_INTERVAL_WIDTH else None
    centre = (float(x.mean()), float(regression.intercept + regression.slope * x.mean()))
    return Fit(float(regression.slope), float(low), float(high), len(x), reason, centre)


# --- What is fitted, from the records ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Cost:
    """One cost the report fits: its name, the samples of one cell, and the FLOP count that should drive it."""

    label: str
    samples: Any  # (record, frame row) -> list of values
    flops: Any  # (record, frame row) -> the FLOP count whose slope is the cost's expectation, or None


def _timing(record: dict[str, Any], name: str) -> list[float]:
    return list(((record.get("timings") or {}).get(name) or {}).get("samples") or [])


def _measurement(record: dict[str, Any], name: str) -> float | None:
    value = (record.get("measurements") or {}).get(name)
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _per_step_flops(record: dict[str, Any], row: pd.Series) -> float | None:
    per_sample = _measurement(record, "train_flops_per_sample")
    return None if per_sample is None else per_sample * row["batch_size"]


COSTS = (
    Cost(
        "training time per slate",
        lambda record, row: [1 / rate for rate in _timing(record, "train_samples_per_s") if rate > 0],
        lambda record, row: _measurement(record, "train_flops_per_sample"),
    ),
    Cost(
        "batch-1 latency",
        lambda record, row: _timing(record, "latency_b1_ms"),
        lambda record, row: _measurement(record, "infer_flops_per_sample"),
    ),
    # Activations kept for the backward pass grow, to first order, as the work of a training step does.
    Cost(
        "memory over baseline",
        lambda record, row: [] if pd.isna(row.get(PEAK_MEMORY)) else [float(row[PEAK_MEMORY])],
        _per_step_flops,
    ),
)


def cost_points(line: pd.DataFrame, axis: str, cost: Cost) -> tuple[list[Any], list[list[float]], list[list[float]]]:
    """(axis values, each value's samples of the cost, its FLOP count as a one-item list) of one model's ok cells
    along ``axis``; the samples of every seed pooled (seeds change the data, not the cost)."""
    ok = line[line["status"] == "ok"]
    values, samples, flops = [], [], []
    for value, group in ok.groupby(axis):
        rows = [row for _, row in group.iterrows()]
        values.append(value)
        samples.append([v for row in rows for v in cost.samples(row["_record"], row)])
        flops.append([c for c in (cost.flops(row["_record"], row) for row in rows) if c is not None][:1])
    return values, samples, flops


def cost_fits(line: pd.DataFrame, axis: str, cost: Cost) -> tuple[Fit, Fit]:
    """(the cost's fit, the fit of its FLOP count) for one model's ok cells along ``axis``."""
    values, samples, flops = cost_points(line, axis, cost)
    return fit_exponent(values, samples), fit_exponent(values, flops)


def exponent_text(symbol: str, fit: Fit, expected: Fit) -> str:
    """"grows as T^1.80 [1.71, 1.89]; FLOPs T^1.93", or why there is no fit."""
    grown = (
        f"grows as {symbol}^{fit.slope:.2f} [{fit.low:.2f}, {fit.high:.2f}]"
        if fit.fitted
        else f"not fitted: {fit.reason}"
    )
    flops = f"{symbol}^{expected.slope:.2f}" if not math.isnan(expected.slope) else "–"
    return f"{grown}; FLOPs {flops}"


def exponents_table(line: pd.DataFrame, axis: str) -> pd.DataFrame:
    """Per model along ``axis``: each cost's fitted exponent and interval beside the FLOP count's slope."""
    symbol = SHAPE_SYMBOLS[axis]
    rows = []
    for model, group in line.groupby("model", sort=False):
        row = {"model": model}
        for cost in COSTS:
            row[cost.label] = exponent_text(symbol, *cost_fits(group, axis, cost))
        rows.append(row)
    return pd.DataFrame(rows)


def exponents_section(line: pd.DataFrame, axis: str) -> list[str]:
    """The "Across" section's fitted exponents, in words, for a shape axis with at least MIN_POINTS values."""
    if axis not in SHAPE_SYMBOLS or line[axis].nunique() < MIN_POINTS:
        return []
    symbol = SHAPE_SYMBOLS[axis]
    return [
        f"### How cost grows with {AXIS_LABELS[axis]} ({symbol}): fitted exponents",
        "",
        f"Each cost ~ {symbol}^k: k is the least-squares slope of log(cost) on log({symbol}) over the points above, "
        "with its 95% interval (the wider of the regression interval and a bootstrap over each point's samples). "
        f"An interval wider than {MAX_INTERVAL_WIDTH} reads \"not fitted: too noisy\". Beside each, the slope of the "
        "counted FLOPs fitted the same way, the cost's expectation: training FLOPs per sample for the time per "
        "slate, inference FLOPs per sample for the latency, training FLOPs per step (per sample x batch) for the "
        "memory (activations kept for the backward pass grow, to first order, as the step's work does).",
        "",
        exponents_table(line, axis).to_markdown(index=False),
        "",
    ]


# --- The largest shape within the memory budget ------------------------------------------------------------------


def budget_text(records: list[dict[str, Any]]) -> str:
    """The memory budget the cells ran under, from their records."""
    budgets = {
        (b.get("memory_limit_bytes"), b.get("memory_limit_method"))
        for b in (r.get("memory_budget") for r in records)
        if b
    }
    if not budgets:
        return "not recorded (records written before the budget was kept)"
    return "; ".join(
        f"{size / 1024**3:.1f} GiB ({method})" if size else f"unknown ({method})" for size, method in sorted(budgets)
    )


def largest_row(line: pd.DataFrame, axis: str) -> tuple[str, str]:
    """(the largest value of ``axis`` that trained, the smallest that ran out of memory) for one model's line."""
    trained = line.loc[line["status"] == "ok", axis]
    short = line.loc[line["status"] == "oom", axis]
    return (
        str(trained.max()) if len(trained) else "none",
        str(short.min()) if len(short) else f"none (largest tried: {line[axis].max()})",
    )


def largest_shape_section(lines: dict[str, pd.DataFrame], records: list[dict[str, Any]]) -> list[str]:
    """Per model, along each swept shape axis, the largest value that trained and the first that did not fit."""
    shape_lines = {axis: line for axis, line in lines.items() if axis in SHAPE_SYMBOLS}
    if not shape_lines:
        return []
    models = list(dict.fromkeys(m for line in shape_lines.values() for m in line["model"]))
    rows = []
    for model in models:
        row = {"model": model}
        for axis, line in shape_lines.items():
            largest, first_short = largest_row(line[line["model"] == model], axis)
            row[f"largest {AXIS_LABELS[axis]} trained"] = largest
            row[f"first {AXIS_LABELS[axis]} out of memory"] = first_short
        rows.append(row)
    return [
        "## The largest shape within the memory budget",
        "",
        f"Memory budget of each cell: {budget_text(records)}. Along each axis of the \"Across\" sections above, the "
        "largest value whose cell trained (status ok) and the smallest whose cell ran out of memory (status oom).",
        "",
        pd.DataFrame(rows).to_markdown(index=False),
        "",
    ]
