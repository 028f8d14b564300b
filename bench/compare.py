"""Cell-by-cell comparison of two runs, for regression checks in CI (accuracy; speed only roughly: `bench ab`).

A value is a regression only when it is worse beyond the threshold, in its catalog direction, and a test
says the change is more than noise:

- speeds and latencies, on the two cells' kept timing samples, cut into the stretches of time they were
  taken in (the serving bursts for inference blocks and latency requests, the epochs for training blocks):
  the compared quantile of each stretch (its median for throughputs and latency p50, its p95 or p99 for
  those), then Mann-Whitney U between the two runs' stretches. Samples of one stretch share the machine's
  level of those seconds, so they are not independent evidence; the stretches are closer to it. Holm's
  correction runs across every speed value the comparison tests: drift between runs moves many values at
  once, which Benjamini-Hochberg would read as many real changes (on the committed A/A pair of
  results/reference/stability, 13 of 57 values have p < 0.05 uncorrected: BH keeps 6 significant, Holm 1).
  Both sides must also be precise enough to resolve the threshold: the 95% interval of the compared
  quantile within +-threshold of it (for a median at the default 5%, exactly the report's "unstable" mark;
  200 requests give a p99 no interval at all).
  Even so, one run per side cannot separate a change from drift between runs (the machine's level moves
  between processes and over minutes): `bench ab` gives speed verdicts from interleaved processes.
  Records without samples cannot be tested: their speeds are shown, never called regressions;
- slate_acc: McNemar's exact test on the per-slate hits when both cells saw the same data (same
  ``data_key``), else a two-proportion z-test on the judged slates;
- a value made of per-slate values (the catalog's ``per_slate``: slate_value, slate_regret, slate_regret_share):
  the paired t-test on those values when both cells saw the same data;
- the other accuracy metrics keep no per-slate values: the threshold alone decides.

A cell that ran contended on either side (the record's ``conditions``) is shown with its changes, but its
speeds are not called regressions unless asked: a loaded machine slows everything. Memory and time are
shown when they change and never fail the check. Runs whose device, torch version or precision differ
(``environment_differences``) are compared with a warning, or refused with `bench compare --strict`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats as scipy_stats

from bench.catalog import REGRESSION_KINDS, Metric, lookup
from bench.records import latest_records, metrics_optional, paired_slate_values, slate_hits
from bench.stats import SIGNIFICANCE, holm, is_unstable, paired_slates, segments, shares, two_proportion_p

COMPARED_KINDS = (*REGRESSION_KINDS, "memory", "time")  # shown when changed; only REGRESSION_KINDS fail the check
TIMED_KINDS = ("speed", "latency")
THRESHOLD = 0.05  # the relative change `bench compare` flags unless told otherwise
SPEED_CAVEAT = (
    "Speed: one run per side cannot separate a change from drift between runs (this machine's speed moves "
    "between processes and over minutes);\nfor a speed verdict use `bench ab` (interleaved processes, paired test)."
)


@dataclass
class Change:
    key: str
    cell: str
    name: str
    before: float
    after: float
    kind: str  # the catalog's kind: accuracy | speed | latency | memory | time
    # the test that judged it: Mann-Whitney U on stretches, McNemar, two-proportion, paired t, threshold, "no samples"
    test: str
    p: float | None  # its p-value (None: no test)
    p_adjusted: float | None  # speeds: Holm-adjusted across the comparison's tested speed values; else p
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
        if self.contended and self.kind in TIMED_KINDS:
            return "contended: not judged"  # a speed taken while other work ran says nothing either way
        if self.test == "no samples":
            return "changed (untested: no timing samples)"
        if self.p_adjusted is not None and self.p_adjusted >= SIGNIFICANCE:
            return f"noise (p {self.p_adjusted:.2g}{' Holm' if self.kind in TIMED_KINDS else ''})"
        if self.worse and not self.resolved:
            return "worse, too noisy to call"  # its interval is wider than the threshold
        return "worse" if self.worse else "better"


def relative_change(before: float, after: float) -> float:
    if before:
        return (after - before) / abs(before)
    return 0.0 if after == before else math.inf


def describe(record: dict[str, Any]) -> str:
    c = record["config"]
    w = c["workload"]
    return (
        f"{record['model']} s{c['seed']} b{w['batch_size']} T{w['slate_length']} S{w['candidates']} "
        # the key tells apart cells alike in everything shown
        f"U{w['user_dim']} F{w['item_dim']} {c['train']['loss']} [{record['key'][:8]}]"
    )


@dataclass
class Comparison:
    changes: list[Change]
    status_changes: list[str]
    only_a: list[str]
    only_b: list[str]
    compared_cells: int  # cells in both runs, ok on both sides, with at least one value compared
    environment_differences: list[str]  # what differs between the runs' conditions (see ``environment_differences``)
    incomplete: list[str]  # cells ok in both runs whose record on either side lacks its metrics: nothing to compare

    @property
    def compared_values(self) -> int:
        """The values really compared: a number on both sides."""
        return len(self.changes)

    @property
    def regressions(self) -> int:
        return sum(1 for change in self.changes if change.regression) + len(self.status_changes)


def compare_runs(run_a: Path, run_b: Path, threshold: float, include_contended: bool = False) -> Comparison:
    a = {r["key"]: r for r in latest_records(run_a, metrics_optional)}
    b = {r["key"]: r for r in latest_records(run_b, metrics_optional)}
    changes: list[Change] = []
    status_changes: list[str] = []
    incomplete: list[str] = []
    compared = 0
    for key in [k for k in a if k in b]:
        ra, rb = a[key], b[key]
        if ra["status"] != rb["status"]:
            if ra["status"] == "ok":
                status_changes.append(f"{describe(ra)}: {ra['status']} -> {rb['status']} ({rb.get('error')})")
            continue
        if ra["status"] != "ok":
            continue
        lacking = [str(run) for run, r in ((run_a, ra), (run_b, rb)) if "slate_acc" not in (r.get("metrics") or {})]
        if lacking:
            incomplete.append(f"{describe(ra)}: no metrics in {' and '.join(lacking)}")
            continue
        contended = _contended(ra) or _contended(rb)
        cell_changes = [
            change
            for entry in _compared(ra)
            if (change := _change(entry, ra, rb, threshold, contended, include_contended)) is not None
        ]
        compared += bool(cell_changes)
        changes += cell_changes
    _judge(changes, include_contended)
    only_a = [describe(a[k]) for k in a if k not in b]
    only_b = [describe(b[k]) for k in b if k not in a]
    differences = environment_differences(list(a.values()), list(b.values()))
    return Comparison(changes, status_changes, only_a, only_b, compared, differences, incomplete)


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
    """One value's change, tested; whether it is a regression is decided with the others' (``_judge``)."""
    before, after = ra[entry.section].get(entry.name), (rb.get(entry.section) or {}).get(entry.name)
    if not _number(before) or not _number(after):
        return None
    before, after = float(before), float(after)
    test, p = _test(entry, ra, rb)
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
        p_adjusted=p,
        resolved=resolved,
        flagged=abs(relative_change(before, after)) > threshold,
        worse=entry.worse(before, after, threshold),
        contended=contended,
        regression=False,
    )


def _judge(changes: list[Change], include_contended: bool) -> None:
    """Holm's correction across the tested speed values, then each value's regression verdict: worse beyond
    the threshold, significant, and (speeds) resolved and not contended unless asked."""
    tested = [c for c in changes if c.kind in TIMED_KINDS and c.p is not None]
    for change, adjusted in zip(tested, holm([c.p for c in tested]), strict=True):
        change.p_adjusted = adjusted
    for c in changes:
        significant = c.p is None and c.test == "threshold" or c.p_adjusted is not None and c.p_adjusted < SIGNIFICANCE
        excused = c.contended and c.kind in TIMED_KINDS and not include_contended
        c.regression = c.kind in REGRESSION_KINDS and c.worse and significant and c.resolved and not excused


def _test(entry: Metric, ra: dict, rb: dict) -> tuple[str, float | None]:
    """The test of one value's change and its p-value."""
    if entry.kind in TIMED_KINDS:
        stretches_a, stretches_b = stretch_quantiles(ra, entry), stretch_quantiles(rb, entry)
        if not stretches_a or not stretches_b:
            return "no samples", None
        unit = "epochs" if entry.timing == "train_samples_per_s" else "bursts"
        of = "" if entry.quantile == 0.5 else f" p{100 * entry.quantile:g}s"
        test = f"Mann-Whitney U{of}, {len(stretches_a)}+{len(stretches_b)} {unit}"
        return test, float(scipy_stats.mannwhitneyu(stretches_a, stretches_b).pvalue)
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


def stretch_quantiles(record: dict[str, Any], entry: Metric) -> list[float]:
    """The compared quantile of each stretch of time a timing's samples were taken in (empty: no samples).

    Records since the segments were kept say how many samples each stretch took. Earlier ones are cut as their
    samplers dealt them: training blocks into the epochs, inference blocks and latency requests into the
    serving bursts (schema 3; schema 2 took its latency requests in ``latency_bursts`` and its inference blocks
    in one burst at the end)."""
    timing = _timing(record, entry)
    samples = timing.get("samples") or []
    sizes = timing.get("segments")
    if samples and not sizes:
        x = record.get("measurements") or {}
        if entry.timing == "train_samples_per_s":
            parts = (record.get("config") or {}).get("train", {}).get("epochs", 1)
        elif entry.timing == "latency_b1_ms":
            parts = x.get("serving_bursts") or x.get("latency_bursts") or 1
        else:
            parts = x.get("serving_bursts") or 1
        sizes = shares(len(samples), min(parts, len(samples)))
    return [float(np.percentile(stretch, 100 * entry.quantile)) for stretch in segments(samples, sizes or [])]


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
