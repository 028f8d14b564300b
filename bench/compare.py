"""Cell-by-cell comparison of two runs, for regression checks in CI.

A value is a regression only when it is worse beyond the threshold, in its catalog direction, and a test
says the change is more than noise:

- speeds and latencies, on the two cells' kept timing samples: a median (throughputs, latency p50) by
  Mann-Whitney U (asv's rule); a tail percentile (latency p95, p99) by Mood's quantile test, since a rank
  test speaks about the whole distribution, not its tail. Both sides must also be precise enough to
  resolve the threshold: the 95% interval of the compared quantile within +-threshold of it (for a
  median at the default 5%, exactly the report's "unstable" mark; 200 requests give a p99 no interval at
  all). The samples of one run come from one process and miss the drift between runs, so a timing too
  noisy to resolve the threshold inside its own run is not called a regression from it (it is shown as
  "too noisy"). Records without samples cannot be tested: their speeds are shown, never called
  regressions;
- slate_acc: McNemar's exact test on the per-slate hits when both cells saw the same data (same
  ``data_key``), else a two-proportion z-test on the judged slates;
- a value made of per-slate values (the catalog's ``per_slate``: slate_value, slate_regret, slate_regret_share):
  the paired t-test on those values when both cells saw the same data;
- the other accuracy metrics keep no per-slate values: the threshold alone decides.

A cell that ran contended on either side (the record's ``conditions``) is shown with its changes, but its
speeds are not called regressions unless asked: a loaded machine slows everything. Memory and time are
shown when they change and never fail the check.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from scipy import stats as scipy_stats

from bench.catalog import REGRESSION_KINDS, Metric, lookup
from bench.records import latest_records, paired_slate_values, slate_hits
from bench.stats import SIGNIFICANCE, is_unstable, paired_slates, quantile_test, two_proportion_p

COMPARED_KINDS = (*REGRESSION_KINDS, "memory", "time")  # shown when changed; only REGRESSION_KINDS fail the check
TIMED_KINDS = ("speed", "latency")
THRESHOLD = 0.05  # the relative change `bench compare` flags unless told otherwise


@dataclass
class Change:
    key: str
    cell: str
    name: str
    before: float
    after: float
    kind: str  # the catalog's kind: accuracy | speed | latency | memory | time
    # the test that judged it: Mann-Whitney U, quantile, McNemar, two-proportion, paired t, threshold, "no samples"
    test: str
    p: float | None  # its p-value (None: no test)
    resolved: bool  # precise enough on both sides to resolve the threshold (always, for untimed values)
    flagged: bool  # changed beyond the threshold, either way
    worse: bool  # changed beyond the threshold for the worse
    contended: bool  # either cell ran contended
    regression: bool  # worse, significant, and (for speeds) not contended unless asked

    @property
    def relative(self) -> float:
        return relative_change(self.before, self.after)

    @property
    def verdict(self) -> str:
        if self.regression:
            return "REGRESSION"
        if not self.flagged:
            return ""
        if self.test == "no samples":
            return "changed (untested: no timing samples)"
        if self.p is not None and self.p >= SIGNIFICANCE:
            return f"noise (p {self.p:.2g})"
        if self.worse and not self.resolved:
            return "worse, too noisy to call (interval wider than the threshold)"
        if self.worse and self.contended and self.kind in TIMED_KINDS:
            return "worse, contended (not counted)"
        return "worse" if self.worse else "better"


def relative_change(before: float, after: float) -> float:
    if before:
        return (after - before) / abs(before)
    return 0.0 if after == before else math.inf


def describe(record: dict[str, Any]) -> str:
    c = record["config"]
    w = c["workload"]
    return (
        f"{record['model']} seed {c['seed']} batch {w['batch_size']} T {w['slate_length']} S {w['candidates']} "
        # the key tells apart cells alike in everything shown
        f"U {w['user_dim']} F {w['item_dim']} loss {c['train']['loss']} [{record['key']}]"
    )


@dataclass
class Comparison:
    changes: list[Change]
    status_changes: list[str]
    only_a: list[str]
    only_b: list[str]
    compared_cells: int  # cells in both runs, ok on both sides, with at least one value compared
    environment_differences: list[str]  # what differs between the runs' conditions (see ``environment_differences``)

    @property
    def regressions(self) -> int:
        return sum(1 for change in self.changes if change.regression) + len(self.status_changes)


def compare_runs(run_a: Path, run_b: Path, threshold: float, include_contended: bool = False) -> Comparison:
    a = {r["key"]: r for r in latest_records(run_a)}
    b = {r["key"]: r for r in latest_records(run_b)}
    changes: list[Change] = []
    status_changes: list[str] = []
    compared = 0
    for key in [k for k in a if k in b]:
        ra, rb = a[key], b[key]
        if ra["status"] != rb["status"]:
            if ra["status"] == "ok":
                status_changes.append(f"{describe(ra)}: {ra['status']} -> {rb['status']} ({rb.get('error')})")
            continue
        if ra["status"] != "ok":
            continue
        contended = _contended(ra) or _contended(rb)
        cell_changes = [
            change
            for entry in _compared(ra)
            if (change := _change(entry, ra, rb, threshold, contended, include_contended)) is not None
        ]
        compared += bool(cell_changes)
        changes += cell_changes
    only_a = [describe(a[k]) for k in a if k not in b]
    only_b = [describe(b[k]) for k in b if k not in a]
    differences = environment_differences(list(a.values()), list(b.values()))
    return Comparison(changes, status_changes, only_a, only_b, compared, differences)


def _conditions(record: dict[str, Any]) -> dict[str, str | None]:
    """The conditions of a record that make its values comparable with another's: device, torch, precision."""
    env = record.get("environment") or {}
    device = env.get("device")
    return {
        "device": f"{device} ({env.get('device_name')})" if device else None,
        "torch": env.get("torch"),
        "precision": env.get("precision") or (record.get("config") or {}).get("precision"),
    }


def environment_differences(records_a: list[dict[str, Any]], records_b: list[dict[str, Any]]) -> list[str]:
    """``device cpu (X) vs cuda (Y)``... for each condition whose values differ between the two runs' records
    (records that do not say are left out)."""
    differences = []
    for name in ("device", "torch", "precision"):
        values = [{_conditions(r)[name] for r in records} - {None} for records in (records_a, records_b)]
        if all(values) and values[0] != values[1]:
            differences.append(f"{name} {', '.join(sorted(values[0]))} vs {', '.join(sorted(values[1]))}")
    return differences


def _change(
    entry: Metric, ra: dict, rb: dict, threshold: float, contended: bool, include_contended: bool
) -> Change | None:
    before, after = ra[entry.section].get(entry.name), (rb.get(entry.section) or {}).get(entry.name)
    if not _number(before) or not _number(after):
        return None
    before, after = float(before), float(after)
    test, p = _test(entry, ra, rb)
    relative = relative_change(before, after)
    worse = entry.worse(before, after, threshold)
    significant = p is None and test == "threshold" or p is not None and p < SIGNIFICANCE
    excused = contended and entry.kind in TIMED_KINDS and not include_contended
    resolved = entry.kind not in TIMED_KINDS or all(
        not is_unstable(_timing(r, entry), threshold, entry.quantile) for r in (ra, rb)
    )
    return Change(
        key=ra["key"],
        cell=describe(ra),
        name=entry.name,
        before=before,
        after=after,
        kind=entry.kind,
        test=test,
        p=p,
        resolved=resolved,
        flagged=abs(relative) > threshold,
        worse=worse,
        contended=contended,
        regression=entry.kind in REGRESSION_KINDS and worse and significant and resolved and not excused,
    )


def _test(entry: Metric, ra: dict, rb: dict) -> tuple[str, float | None]:
    """The test of one value's change and its p-value."""
    if entry.kind in TIMED_KINDS:
        samples_a, samples_b = _timing(ra, entry).get("samples"), _timing(rb, entry).get("samples")
        if not samples_a or not samples_b:
            return "no samples", None
        if entry.quantile != 0.5:
            return f"quantile (p{100 * entry.quantile:g})", quantile_test(samples_a, samples_b, entry.quantile)
        return "Mann-Whitney U", float(scipy_stats.mannwhitneyu(samples_a, samples_b).pvalue)
    if entry.name == "slate_acc":
        hits_a, hits_b = slate_hits(ra), slate_hits(rb)
        if hits_a is not None and hits_b is not None:
            if ra.get("data_key") == rb.get("data_key") and len(hits_a) == len(hits_b):
                return "McNemar", paired_slates(hits_a, hits_b)[2]
            return "two-proportion", two_proportion_p(int(hits_a.sum()), len(hits_a), int(hits_b.sum()), len(hits_b))
    paired = paired_slate_values(ra, rb, entry) if entry.per_slate is not None else None
    if paired is not None:
        return "paired t", paired[2]
    return "threshold", None


def _timing(record: dict[str, Any], entry: Metric) -> dict[str, Any]:
    """The record's timing summary behind a timed value (empty where the record keeps none)."""
    return (record.get("timings") or {}).get(entry.timing) or {}


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _contended(record: dict[str, Any]) -> bool:
    return bool((record.get("conditions") or {}).get("contended"))


def _compared(record: dict[str, Any]) -> list[Metric]:
    """Catalog entries of the record's values that are compared (counts and facts of the cell are not)."""
    names = [name for section in ("metrics", "measurements") for name in (record.get(section) or {})]
    entries = [lookup(name) for name in names]
    return [e for e in entries if e is not None and e.kind in COMPARED_KINDS]
