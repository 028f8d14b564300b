"""The metric catalog: every recorded metric and measurement, with its label, unit, direction and kind.

Report tables, plots and ``bench compare`` read what a value means from here; adding a metric to the
record is adding one entry. Names ending in ``@k`` (``ndcg@k``) stand for a family (``ndcg@1``, ``ndcg@5``...).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import IntEnum


class Direction(IntEnum):
    LOWER = -1  # lower is better
    NEITHER = 0  # a fact about the cell, not a score
    HIGHER = 1  # higher is better


# kinds: accuracy (a quality score), speed, latency, memory, compute, time, count (a size, never compared)
QUALITY_KINDS = ("accuracy",)
REGRESSION_KINDS = ("accuracy", "speed", "latency")  # a worse value beyond the threshold fails `bench compare`


@dataclass(frozen=True)
class Metric:
    name: str
    label: str
    unit: str
    direction: Direction
    kind: str
    section: str  # the record's section: "metrics" or "measurements"
    timing: str | None = None  # the record's ``timings`` entry whose samples this value summarises
    quantile: float = 0.5  # which quantile of those samples the value is (0.5: their median)
    # Ranks the whole candidate list, undisplayed candidates included: not comparable for a model whose
    # registration says its scores of undisplayed candidates mean nothing (model_properties).
    ranks_undisplayed: bool = False
    # The report's headline column header, where "label (unit)" is too wide for a GitHub page; else None.
    short: str | None = None

    def worse(self, before: float, after: float, threshold: float) -> bool:
        """``after`` is worse than ``before`` by more than ``threshold`` (relative) in this metric's direction."""
        if self.direction is Direction.NEITHER or before == 0:
            return False
        relative = (after - before) / abs(before)
        return relative * self.direction < -threshold


H, L, N = Direction.HIGHER, Direction.LOWER, Direction.NEITHER
_M, _X = "metrics", "measurements"

_ENTRIES = (
    # quality, over the test split (bench/cell.py:evaluate, bench/metrics.py)
    Metric("slate_acc", "slate accuracy", "", H, "accuracy", _M),
    Metric("total_acc", "total accuracy (whole candidate list)", "", H, "accuracy", _M, ranks_undisplayed=True),
    Metric("mrr", "MRR", "", H, "accuracy", _M),
    Metric("regret", "regret (true utility lost)", "", L, "accuracy", _M),
    Metric("ndcg@k", "NDCG@k", "", H, "accuracy", _M),
    Metric("label_ndcg@k", "label NDCG@k", "", H, "accuracy", _M),
    Metric("map@k", "MAP@k", "", H, "accuracy", _M),
    Metric("precision@k", "precision@k", "", H, "accuracy", _M),
    # the world's value of the model's order of the displayed slate (bench/worlds.py, docs/workloads.md)
    Metric("slate_value", "slate value (discounted contextual utility)", "utility", H, "accuracy", _M),
    Metric("slate_regret", "slate regret (best order's value lost)", "utility", L, "accuracy", _M),
    Metric(
        "slate_regret_share", "slate regret share (of the best order's gain over a random order)", "", L, "accuracy", _M
    ),
    Metric("test_slates", "test slates", "slates", N, "count", _M),
    Metric("judged_slates", "judged test slates", "slates", N, "count", _M),
    # measurements (bench/measure.py, bench/flops.py, bench/cell.py)
    Metric("parameters", "parameters", "", N, "count", _X),
    Metric("train_samples_per_s", "train", "samples/s", H, "speed", _X, "train_samples_per_s", short="train (/s)"),
    Metric("infer_samples_per_s", "inference", "samples/s", H, "speed", _X, "infer_samples_per_s", short="infer (/s)"),
    Metric("latency_b1_p50_ms", "latency b1 p50", "ms", L, "latency", _X, "latency_b1_ms", short="p50 (ms)"),
    Metric("latency_b1_p95_ms", "latency b1 p95", "ms", L, "latency", _X, "latency_b1_ms", 0.95),
    Metric("latency_b1_p99_ms", "latency b1 p99", "ms", L, "latency", _X, "latency_b1_ms", 0.99),
    Metric("serving_bursts", "bursts the inference blocks and latency requests were spread in", "", N, "count", _X),
    # CPU memory: "net" is over the process's baseline (interpreter, torch, harness) measured before any
    # data or model existed, so it is the cell's own footprint; the absolute peaks include the baseline.
    Metric("cpu_net_peak_rss_mib", "memory over baseline", "MiB", L, "memory", _X, short="MiB"),
    Metric("cpu_net_peak_rss_train_mib", "memory over baseline, training", "MiB", L, "memory", _X),
    Metric("cpu_net_peak_rss_infer_mib", "memory over baseline, inference", "MiB", L, "memory", _X),
    Metric("cpu_rss_data_mib", "data in memory", "MiB", N, "memory", _X),
    Metric("cpu_rss_baseline_mib", "process baseline RSS", "MiB", N, "memory", _X),
    Metric("cpu_peak_rss_train_mib", "peak RSS, training", "MiB", L, "memory", _X),
    Metric("cpu_peak_rss_infer_mib", "peak RSS, inference", "MiB", L, "memory", _X),
    Metric("cpu_peak_rss_mib", "peak RSS", "MiB", L, "memory", _X),
    Metric("cuda_peak_allocated_train_mib", "CUDA peak allocated, training", "MiB", L, "memory", _X, short="CUDA MiB"),
    Metric("cuda_peak_allocated_infer_mib", "CUDA peak allocated, inference", "MiB", L, "memory", _X),
    Metric("cuda_peak_reserved_train_mib", "CUDA peak reserved, training", "MiB", L, "memory", _X),
    Metric("cuda_peak_reserved_infer_mib", "CUDA peak reserved, inference", "MiB", L, "memory", _X),
    Metric("train_flops_per_sample", "train compute per sample", "FLOP", N, "compute", _X),
    Metric("infer_flops_per_sample", "inference compute per sample", "FLOP", N, "compute", _X),
    Metric("train_flops_per_s", "train FLOP/s", "FLOP/s", H, "compute", _X),
    Metric("infer_flops_per_s", "inference FLOP/s", "FLOP/s", H, "compute", _X),
    Metric("peak_flops_per_s", "device peak FLOP/s", "FLOP/s", N, "compute", _X),
    Metric("train_mfu", "train MFU", "", H, "compute", _X),
    Metric("infer_mfu", "inference MFU", "", H, "compute", _X),
    Metric("train_steady_seconds", "training time after warm-up", "s", L, "time", _X),
    Metric("train_warmup_seconds", "warm-up time (includes compilation)", "s", L, "time", _X),
    Metric("wall_seconds", "cell wall time", "s", L, "time", _X),
)
CATALOG: dict[str, Metric] = {m.name: m for m in _ENTRIES}


def lookup(name: str) -> Metric | None:
    """The catalog entry of a recorded name (``ndcg@5`` -> the ``ndcg@k`` family, relabelled); None if unknown."""
    if name in CATALOG:
        return CATALOG[name]
    family, at, k = name.rpartition("@")
    entry = CATALOG.get(f"{family}@k") if at and k.isdigit() else None
    if entry is None:
        return None
    return replace(entry, name=name, label=entry.label.replace("@k", f"@{k}"))


def header(name: str) -> str:
    """A table header: the label, with the unit in parentheses."""
    entry = lookup(name)
    if entry is None:
        return name
    return f"{entry.label} ({entry.unit})" if entry.unit and entry.kind != "count" else entry.label


def short_header(name: str) -> str:
    """The headline's narrower header: the entry's short label where it has one, else ``header``."""
    entry = lookup(name)
    return entry.short if entry is not None and entry.short else header(name)


def summarising(timing: str) -> list[Metric]:
    """The entries whose values are quantiles of the ``timing`` samples (latency_b1_ms: p50, p95, p99)."""
    return [m for m in _ENTRIES if m.timing == timing]


def of_kind(*kinds: str) -> list[Metric]:
    return [m for m in _ENTRIES if m.kind in kinds]


def is_quality(name: str) -> bool:
    entry = lookup(name)
    return entry is not None and entry.kind in QUALITY_KINDS
