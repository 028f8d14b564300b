"""Cell-by-cell comparison of two runs, for regression checks in CI."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.report import latest_records

# measurement -> True if higher is better; quality metrics (records' "metrics") are all higher-is-better
SPEED = {
    "train_samples_per_s": True,
    "infer_samples_per_s": True,
    "latency_b1_p50_ms": False,
    "latency_b1_p95_ms": False,
    "latency_b1_p99_ms": False,
}
WATCHED = {"cpu_peak_rss_mib": False, "cuda_peak_allocated_train_mib": False, "wall_seconds": False}
NOT_A_METRIC = {"test_slates"}


@dataclass
class Change:
    key: str
    cell: str
    name: str
    before: float
    after: float
    kind: str  # accuracy | speed | memory

    @property
    def relative(self) -> float:
        return (self.after - self.before) / abs(self.before) if self.before else math.inf

    def worse(self, higher_is_better: bool, threshold: float) -> bool:
        change = self.relative if higher_is_better else -self.relative
        return change < -threshold


def _describe(record: dict[str, Any]) -> str:
    c = record["config"]
    w = c["workload"]
    return (
        f"{record['model']} seed {c['seed']} batch {w['batch_size']} T {w['slate_length']} S {w['candidates']} "
        f"U {w['user_dim']} F {w['item_dim']}"
    )


@dataclass
class Comparison:
    rows: list[tuple[Change, bool, bool]]  # change, flagged, counts as a regression
    status_changes: list[str]
    only_a: list[str]
    only_b: list[str]

    @property
    def regressions(self) -> int:
        return sum(1 for _, _, regression in self.rows if regression) + len(self.status_changes)


def compare_runs(run_a: Path, run_b: Path, threshold: float) -> Comparison:
    a = {r["key"]: r for r in latest_records(run_a)}
    b = {r["key"]: r for r in latest_records(run_b)}
    rows, status_changes = [], []
    for key in [k for k in a if k in b]:
        ra, rb = a[key], b[key]
        cell = _describe(ra)
        if ra["status"] != rb["status"]:
            if ra["status"] == "ok":
                status_changes.append(f"{cell}: {ra['status']} -> {rb['status']} ({rb.get('error')})")
            continue
        candidates: list[tuple[str, str, bool, dict]] = [
            (name, "accuracy", True, ra["metrics"]) for name in ra.get("metrics", {}) if name not in NOT_A_METRIC
        ]
        candidates += [(name, "speed", better, ra["measurements"]) for name, better in SPEED.items()]
        candidates += [(name, "memory", better, ra["measurements"]) for name, better in WATCHED.items()]
        for name, kind, higher_is_better, _ in candidates:
            group = "metrics" if kind == "accuracy" else "measurements"
            before, after = ra.get(group, {}).get(name), rb.get(group, {}).get(name)
            if not isinstance(before, (int, float)) or not isinstance(after, (int, float)):
                continue
            change = Change(key, cell, name, float(before), float(after), kind)
            flagged = abs(change.relative) > threshold
            regression = kind in ("accuracy", "speed") and change.worse(higher_is_better, threshold)
            rows.append((change, flagged, regression))
    only_a = [_describe(a[k]) for k in a if k not in b]
    only_b = [_describe(b[k]) for k in b if k not in a]
    return Comparison(rows, status_changes, only_a, only_b)
