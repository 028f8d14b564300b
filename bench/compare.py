"""Cell-by-cell comparison of two runs, for regression checks in CI."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.catalog import REGRESSION_KINDS, Metric, lookup
from bench.records import latest_records

COMPARED_KINDS = (*REGRESSION_KINDS, "memory", "time")  # shown when changed; only REGRESSION_KINDS fail the check


@dataclass
class Change:
    key: str
    cell: str
    name: str
    before: float
    after: float
    kind: str  # the catalog's kind: accuracy | speed | latency | memory | time

    @property
    def relative(self) -> float:
        return (self.after - self.before) / abs(self.before) if self.before else math.inf


def _describe(record: dict[str, Any]) -> str:
    c = record["config"]
    w = c["workload"]
    return (
        f"{record['model']} seed {c['seed']} batch {w['batch_size']} T {w['slate_length']} S {w['candidates']} "
        f"U {w['user_dim']} F {w['item_dim']} [{record['key']}]"  # the key tells apart cells alike in these
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
        for entry in _compared(ra):
            before, after = ra[entry.section].get(entry.name), rb.get(entry.section, {}).get(entry.name)
            if not isinstance(before, (int, float)) or not isinstance(after, (int, float)):
                continue
            change = Change(key, cell, entry.name, float(before), float(after), entry.kind)
            flagged = abs(change.relative) > threshold
            regression = entry.kind in REGRESSION_KINDS and entry.worse(change.before, change.after, threshold)
            rows.append((change, flagged, regression))
    only_a = [_describe(a[k]) for k in a if k not in b]
    only_b = [_describe(b[k]) for k in b if k not in a]
    return Comparison(rows, status_changes, only_a, only_b)


def _compared(record: dict[str, Any]) -> list[Metric]:
    """Catalog entries of the record's values that are compared (counts and facts of the cell are not)."""
    names = [(section, name) for section in ("metrics", "measurements") for name in record.get(section, {})]
    entries = [lookup(name) for _, name in names]
    return [e for e in entries if e is not None and e.kind in COMPARED_KINDS]
