"""Markdown comparison tables built from records alone."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bench.records import RECORDS_FILE, load_records, unpack_bits

REPORT_FILE = "report.md"
# Metric columns after slate_acc, each naming its k; records hold more (k = 1, 3, 5, 10).
METRIC_COLUMNS = ("total_acc", "mrr", "ndcg@1", "ndcg@3", "ndcg@5", "map@5", "precision@3", "regret", "utility_ndcg@5")
Z95 = 1.959963984540054

DEFINITIONS = """\
## How to read this

- **slate_acc**: share of judged test slates where the model's highest-scored *displayed* item carries the
  slate's highest label (under the founding one-click rule: is the clicked item). A slate is *judged* when it
  has a relevant displayed item (label > 0, e.g. a click); label-based metrics are means over judged slates.
  The interval is a 95% normal-approximation binomial interval.
- **Δ slate_acc vs {baseline}**: paired difference on the same test slates (same data seed): the mean of
  per-slate hit differences, with a 95% interval of mean ± 1.96·sd/√n. `*` marks an interval that
  excludes 0.
- **total_acc**: the model's highest-scored item over the *whole candidate list* is a displayed item with the
  slate's highest label. Undisplayed candidates carry no label, so this is capped well below 1.
- **mrr**: mean reciprocal rank of the best-ranked relevant item within the displayed slate.
- **ndcg@k**: NDCG@k of the displayed slate ordered by the model, linear gain = label (as scikit-learn),
  discount 1/log2(rank+1). **map@k**: mean over slates of AP@k = Σ precision@i at the relevant items of the
  top k / min(#relevant, k). **precision@k**: relevant items in the top k / min(k, slate length).
- **regret**: true utility of the best displayed item minus that of the model's top displayed item, mean over
  all test slates (synthetic: hidden utility; LETOR: relevance grade). **utility_ndcg@k** (synthetic only):
  NDCG@k with linear gain = true utility minus the slate's lowest true utility, 0 for a slate of equal
  utilities, over all test slates.
- **train samples/s**: training throughput over steady-state steps (the first epoch's warm-up steps
  and the per-epoch validation excluded). **infer samples/s**: median over timed blocks of eval-mode
  forward passes at the cell's batch size. **latency b1**: one forward pass at batch size 1.
- **peak RSS**: the cell process's peak resident memory (each cell runs in its own process unless
  `--isolation none`); **CUDA peak**: `torch.cuda.max_memory_allocated` during training.
"""


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, (int, np.integer)):
        return f"{value:,}"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.{digits}f}"


def accuracy_interval(p: float, n: int) -> float:
    return Z95 * math.sqrt(max(p * (1 - p), 0.0) / n) if n else math.nan


def paired_difference(hits_a: np.ndarray, hits_b: np.ndarray) -> tuple[float, float]:
    """Mean of per-slate differences and its 95% half-width."""
    diff = hits_a.astype(float) - hits_b.astype(float)
    half = Z95 * diff.std(ddof=1) / math.sqrt(len(diff)) if len(diff) > 1 else math.nan
    return float(diff.mean()), float(half)


def _hits(record: dict[str, Any]) -> np.ndarray | None:
    packed = record.get("per_slate", {}).get("slate_hits")
    metrics = record.get("metrics", {})
    count = metrics.get("judged_slates", metrics.get("test_slates"))  # hits are kept for judged slates
    return unpack_bits(packed, count) if packed and count else None


def results_table(records: list[dict[str, Any]], baseline: str | None) -> pd.DataFrame:
    """One row per record of one data key; failed cells show their status, not numbers."""
    base = next((r for r in records if r["model"] == baseline and r["status"] == "ok"), None)
    base_hits = _hits(base) if base else None
    rows = []
    for r in records:
        m, x = r.get("metrics", {}), r.get("measurements", {})
        ok = r["status"] == "ok"
        row: dict[str, Any] = {"model": r["model"], "status": r["status"]}
        row["params"] = _fmt(x.get("parameters"))
        if ok:
            n = m.get("judged_slates", m["test_slates"])
            acc = m["slate_acc"]
            row["slate_acc (95% CI)"] = f"{acc:.3f} ± {accuracy_interval(acc, n):.3f}"
            hits = _hits(r)
            if base_hits is not None and hits is not None and r is not base:
                delta, half = paired_difference(hits, base_hits)
                mark = "*" if abs(delta) > half else ""
                row[f"Δ slate_acc vs {baseline}"] = f"{delta:+.3f} ± {half:.3f}{mark}"
            else:
                row[f"Δ slate_acc vs {baseline}"] = "–"
            for name in METRIC_COLUMNS:
                row[name] = _fmt(m.get(name))
            row["train samples/s"] = _fmt(x.get("train_samples_per_s"))
            row["infer samples/s"] = _fmt(x.get("infer_samples_per_s"))
            row["latency b1 p50 (ms)"] = _fmt(x.get("latency_b1_p50_ms"))
            row["latency b1 p99 (ms)"] = _fmt(x.get("latency_b1_p99_ms"))
        if "cpu_peak_rss_mib" in x:
            row["peak RSS (MiB)"] = _fmt(x["cpu_peak_rss_mib"], 0)
        if "cuda_peak_allocated_train_mib" in x:
            row["CUDA peak train (MiB)"] = _fmt(x["cuda_peak_allocated_train_mib"], 0)
        row["wall (s)"] = _fmt(x.get("wall_seconds"), 1)
        rows.append(row)
    return pd.DataFrame(rows).fillna("–")


def _workload_line(record: dict[str, Any]) -> str:
    c = record["config"]
    w, t = c["workload"], c["train"]
    if w.get("data", "synthetic") == "letor":
        d = record.get("data") or {}
        clicks = f" ({w['click_model']} clicks)" if w["labels"] == "clicks" else ""
        return (
            f"seed {c['seed']}, device {c['device']}, {c['precision']}; LETOR data {w['data_path']}: "
            f"{d.get('train_lists', '?')} / {d.get('valid_lists', '?')} / {d.get('test_lists', '?')} train / "
            f"valid / test queries, {d.get('item_dim', '?')} feature columns; initial ranker {w['initial_ranker']}; "
            f"up to {w['candidates']} candidates, slate {w['slate_length']}; labels {w['labels']}{clicks}; "
            f"batch {w['batch_size']} x {t['epochs']} epochs; loss {t['loss']}, lr {t['lr']}"
        )
    return (
        f"seed {c['seed']}, device {c['device']}, {c['precision']}; batch {w['batch_size']} x "
        f"{w['batches']} batches x {t['epochs']} epochs; {w['candidates']} candidates, slate "
        f"{w['slate_length']}; user dim {w['user_dim']}, item dim {w['item_dim']}; "
        f"test {w['test_slates']} slates; loss {t['loss']}, lr {t['lr']}" + _knobs(w)
    )


def _knobs(w: dict[str, Any]) -> str:
    """The workload knobs that differ from the founding experiment, for the section title."""
    parts = []
    if w.get("slate_min") is not None:
        parts.append(f"slate lengths {w['slate_min']}..{w['slate_length']}")
    if w.get("initial_noise") is not None:
        parts.append(f"initial order by utility + noise {w['initial_noise']}")
    if w.get("click_model", "best") != "best":
        eta = f" (eta {w['eta']})" if w["click_model"] == "position-biased" else ""
        parts.append(f"{w['click_model']} clicks{eta}")
    if w.get("labels", "clicks") != "clicks":
        parts.append(f"{w['labels']} labels")
    return "; " + ", ".join(parts) if parts else ""


def render(records: list[dict[str, Any]], title: str, baseline: str = "mlp") -> str:
    lines = [f"# rerank-bench report: {title}", ""]
    if not records:
        return "\n".join(lines + ["No records yet.", ""])
    first = records[-1]
    env = first.get("environment", {})
    command = first.get("run", {}).get("command")
    if command:
        lines += [f"Command: `{command}`", ""]
    if env:
        lines += [
            f"Machine: {env.get('device_name')} ({env.get('device')}), {env.get('threads')} threads, "
            f"torch {env.get('torch')}, python {env.get('python')}, git {env.get('git_revision')}",
            "",
        ]
    groups: dict[str, list[dict[str, Any]]] = {}
    for r in records:
        groups.setdefault(r["data_key"], []).append(r)
    for group in groups.values():
        lines += [f"## Workload: {_workload_line(group[0])}", ""]
        model_kwargs = {r["model"]: r["config"]["model_kwargs"] for r in group}
        table = results_table(group, baseline)
        lines += [table.to_markdown(index=False), ""]
        lines += [
            "Model options: " + "; ".join(f"{name} {kw or 'defaults'}" for name, kw in model_kwargs.items()),
            "",
        ]
        for r in group:
            if r["status"] != "ok":
                lines += [f"- `{r['model']}` {r['status']}: {r.get('error')}"]
        lines.append("")
    lines.append(DEFINITIONS.format(baseline=baseline))
    return "\n".join(lines)


def write_report(run_dir: Path, baseline: str = "mlp") -> Path:
    records_path = run_dir / RECORDS_FILE
    records = load_records(records_path) if records_path.exists() else []
    # A cell recorded twice (a forced re-run) shows its latest result.
    latest = {r["key"]: r for r in records}
    path = run_dir / REPORT_FILE
    path.write_text(render(list(latest.values()), run_dir.name, baseline), encoding="utf-8")
    return path
