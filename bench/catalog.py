"""The metric catalog: every recorded metric and measurement, with its label, unit, direction, kind and how to
read it.

Report tables, plots, the report's "How to read this" and ``bench compare`` read what a value means from here;
adding a metric to the record is adding one entry. Names ending in ``@k`` (``ndcg@k``) stand for a family
(``ndcg@1``, ``ndcg@5``...).
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
    percent: bool = False  # a fraction that tables show as a percentage
    # The record's per-slate values (``per_slate``) the value is made of: (numerator, None), their mean over the
    # test slates, or (numerator, denominator), the ratio of their sums; they give its interval and paired test.
    per_slate: tuple[str, str | None] | None = None
    how: str = ""  # how to read the value: what it measures, over what, and its conventions (markdown)

    def worse(self, before: float, after: float, threshold: float) -> bool:
        """``after`` is worse than ``before`` by more than ``threshold`` (relative) in this metric's direction."""
        if self.direction is Direction.NEITHER or before == 0:
            return False
        relative = (after - before) / abs(before)
        return relative * self.direction < -threshold


H, L, N = Direction.HIGHER, Direction.LOWER, Direction.NEITHER
_M, _X = "metrics", "measurements"

_ROWS = (
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
    Metric(
        "slate_value",
        "slate value (discounted contextual utility)",
        "utility",
        H,
        "accuracy",
        _M,
        per_slate=("slate_value", None),
    ),
    Metric(
        "slate_regret",
        "slate regret (best order's value lost)",
        "utility",
        L,
        "accuracy",
        _M,
        per_slate=("slate_regret", None),
    ),
    Metric(
        "slate_regret_share",
        "slate regret share (of the best order's gain over a random order)",
        "",
        L,
        "accuracy",
        _M,
        per_slate=("slate_regret", "slate_headroom"),
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
    Metric("infer_calls_per_block", "forward passes per timed inference block", "calls", N, "count", _X),
    Metric("latency_b1_cuda_p50_ms", "latency b1 p50, device time", "ms", L, "latency", _X, "latency_b1_cuda_ms"),
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
    # CUDA memory net of the phase's baseline: the data and model on the device (training), and those with
    # the trained weights but no gradient or optimiser state (inference)
    Metric("cuda_allocated_baseline_mib", "CUDA allocated, data and model", "MiB", N, "memory", _X),
    Metric("cuda_net_peak_allocated_train_mib", "CUDA peak allocated over baseline, training", "MiB", L, "memory", _X),
    Metric("cuda_net_peak_allocated_infer_mib", "CUDA peak allocated over baseline, inference", "MiB", L, "memory", _X),
    Metric("train_flops_per_sample", "train compute per sample", "FLOP", N, "compute", _X),
    Metric("infer_flops_per_sample", "inference compute per sample", "FLOP", N, "compute", _X),
    Metric("train_flops_per_s", "train FLOP/s", "FLOP/s", H, "compute", _X),
    Metric("infer_flops_per_s", "inference FLOP/s", "FLOP/s", H, "compute", _X),
    Metric("peak_flops_per_s", "device peak FLOP/s", "FLOP/s", N, "compute", _X),
    Metric("train_mfu", "train MFU", "", H, "compute", _X, percent=True),
    Metric("infer_mfu", "inference MFU", "", H, "compute", _X, percent=True),
    Metric("train_steady_seconds", "training time after warm-up", "s", L, "time", _X),
    Metric("train_warmup_seconds", "warm-up time (includes compilation)", "s", L, "time", _X),
    Metric("wall_seconds", "cell wall time", "s", L, "time", _X),
)

_JUDGED = "mean over the judged test slates (those with a relevant displayed item: label > 0)"
_BURSTS = "taken in bursts spread over the cell (after each epoch and at the end)"
# How to read each value (the report's "How to read this" prints the entries its tables show).
_HOW = {
    "slate_acc": "the highest-scored *displayed* item carries the slate's highest label (with the founding "
    f"one-click data: it is the clicked item); {_JUDGED}",
    "total_acc": "the highest-scored item of the *whole candidate list* carries the slate's highest label; "
    "undisplayed candidates carry no label, so it is capped well below 1",
    "mrr": f"reciprocal rank of the best-ranked relevant item, {_JUDGED}",
    "regret": "true utility of the best displayed item minus that of the model's top displayed item, mean over "
    "every test slate (LETOR: in relevance grades)",
    "ndcg@k": "NDCG of the displayed slate in the model's order, linear gain, discount 1/log2(rank + 1); on "
    "synthetic data the gain is the true utility minus the slate's lowest, on LETOR data the relevance grade; a "
    "slate with no gain to earn (one item, equal utilities; on LETOR no relevant item) has no order to judge and "
    "leaves the mean",
    "label_ndcg@k": f"synthetic data: NDCG with the labels (clicks or grades) as gains, {_JUDGED}",
    "map@k": f"AP@k = the sum of precision@i at the relevant items of the top k / min(#relevant, k), {_JUDGED}",
    "precision@k": f"relevant items in the top k / min(k, slate length), {_JUDGED}",
    "slate_value": "synthetic data: the displayed slate's worth in the model's order under the cell's world, the "
    "sum over positions of 1/log2(position + 1) x the item's contextual utility there (in the independent world, "
    "its utility), mean over every test slate; docs/workloads.md has the worlds",
    "slate_regret": "the best order's slate value minus the model's, mean over every test slate (the best order "
    "is exact up to 7 displayed items, greedy + local search above)",
    "slate_regret_share": "the slate regret summed over the test slates, over the best order's gain on a random "
    "order summed over them: 0 is the best order, 1 no better than a random order",
    "train_samples_per_s": "training samples/s over steady-state steps (the first epoch's warm-up steps and each "
    "epoch's validation excluded), timed in about 20 blocks",
    "infer_samples_per_s": "samples/s of eval-mode forward passes at the cell's batch size, per timed block; "
    f"{_BURSTS}; records of schema 2 took them in one burst at the end",
    "latency_b1_p50_ms": "median time of one eval-mode forward pass at batch size 1 (an online request); "
    f"{_BURSTS}, like the inference blocks; records without `latency_bursts` took them at the end",
    "latency_b1_p95_ms": "the 95th percentile of the same requests (an interval needs 72 of them)",
    "latency_b1_p99_ms": "the 99th percentile of the same requests (an interval needs 368 of them)",
    "cpu_net_peak_rss_mib": "CPU: the cell's peak resident memory during training and during inference, the "
    "larger of the two, minus the process's memory before any data or model existed (interpreter, torch, "
    "harness): the data's, model's and training's own footprint",
    "cpu_peak_rss_mib": "the process's absolute peak resident memory, its baseline included",
    "cuda_peak_allocated_train_mib": "`torch.cuda.max_memory_allocated` during training",
    "cuda_net_peak_allocated_train_mib": "CUDA: the training phase's peak allocated memory minus what was allocated "
    "when it started (the data and model on the device); the cache is emptied and the peak reset between phases",
    "latency_b1_cuda_p50_ms": "CUDA: median device time of the same batch-1 requests, between CUDA events recorded "
    "around each call (no launch overhead or host work); latency_b1_p50_ms is the wall time around a synchronise",
    "infer_calls_per_block": "forward passes in each timed inference block, sized after an untimed warm-up so that "
    "a block lasts min_block_seconds",
    "train_flops_per_sample": "matmul FLOPs of one training step (forward + backward) per sample, counted by "
    "`torch.utils.flop_counter.FlopCounterMode`",
    "train_mfu": "model FLOP utilisation: achieved training FLOP/s over the device's peak for the cell's "
    "precision (data-sheet dense peak on GPUs; on CPUs a cached matmul probe)",
    "wall_seconds": "the cell's wall time, from its start to its record",
}
_ENTRIES = tuple(replace(m, how=_HOW.get(m.name, "")) for m in _ROWS)
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
    """A table header: the label, with the unit in parentheses (% for a fraction shown as a percentage)."""
    entry = lookup(name)
    if entry is None:
        return name
    unit = "%" if entry.percent else entry.unit
    return f"{entry.label} ({unit})" if unit and entry.kind != "count" else entry.label


def shown_value(name: str, value: float) -> float:
    """A value as tables show it: a percentage for a fraction the catalog shows so."""
    entry = lookup(name)
    return value * 100 if entry is not None and entry.percent else value


def short_header(name: str) -> str:
    """The headline's narrower header: the entry's short label where it has one, else ``header``."""
    entry = lookup(name)
    return entry.short if entry is not None and entry.short else header(name)


def summarising(timing: str) -> list[Metric]:
    """The entries whose values are quantiles of the ``timing`` samples (latency_b1_ms: p50, p95, p99)."""
    return [m for m in _ENTRIES if m.timing == timing]


def entries() -> tuple[Metric, ...]:
    """Every entry, in catalog order (families as ``name@k``)."""
    return _ENTRIES


def of_kind(*kinds: str) -> list[Metric]:
    return [m for m in _ENTRIES if m.kind in kinds]


def is_quality(name: str) -> bool:
    entry = lookup(name)
    return entry is not None and entry.kind in QUALITY_KINDS
