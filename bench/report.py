"""Markdown reports and PNG plots, built from a run's records alone."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bench.catalog import Direction, header, is_quality, lookup
from bench.records import latest_records, unpack_bits
from bench.stats import binomial_interval, mean_interval, paired_seeds, paired_slates

REPORT_FILE = "report.md"
PEAK_MEMORY = "peak_memory_mib"  # derived: CUDA peak allocated in training on a GPU, else the peak RSS
AXIS_COLUMNS = ["loss", "batch_size", "slate_length", "candidates", "user_dim", "item_dim"]
AXIS_LABELS = {
    "loss": "loss",
    "batch_size": "batch size",
    "slate_length": "slate length T",
    "candidates": "candidates S",
    "user_dim": "user feature dim",
    "item_dim": "item feature dim",
}
# Columns of the per-axis tables; headers and directions come from the metric catalog.
AXIS_METRICS = ("slate_acc", "train_samples_per_s", "latency_b1_p50_ms", PEAK_MEMORY)
PRIMARY = "slate_acc"  # the headline's accuracy, with its interval and its paired delta vs the baseline
SIGNIFICANCE = 0.05
# Models that train nothing and bound the others; the report names them when they ran.
REFERENCE_MODELS = {
    "oracle": "is the accuracy ceiling (it scores with the true utilities)",
    "random": "is the floor (a random order)",
    "initial": "keeps the displayed (initial) order",
}


def _hits(record: dict[str, Any]) -> np.ndarray | None:
    packed = record.get("per_slate", {}).get("slate_hits")
    metrics = record.get("metrics", {})
    count = metrics.get("judged_slates", metrics.get("test_slates"))  # hits are kept for judged slates
    return unpack_bits(packed, count) if packed and count else None


def records_frame(records: list[dict[str, Any]]) -> pd.DataFrame:
    """One row per record: its axes, status, metrics and measurements as columns."""
    rows = []
    for r in records:
        config, x = r["config"], r.get("measurements", {})
        row: dict[str, Any] = {
            "key": r["key"],
            "model": r["model"],
            "seed": config["seed"],
            "status": r["status"],
            "error": r.get("error"),
            "device": config["device"],
            # cells that differ only in model and seed share a point
            "point": repr({k: v for k, v in config.items() if k not in ("model", "seed", "model_kwargs")}),
            **{axis: config["workload"][axis] for axis in AXIS_COLUMNS if axis != "loss"},
            "loss": config["train"]["loss"],
            **r.get("metrics", {}),
            **x,
        }
        row[PEAK_MEMORY] = x.get("cuda_peak_allocated_train_mib", x.get("cpu_peak_rss_mib"))
        row["_record"] = r
        rows.append(row)
    return pd.DataFrame(rows)


def metric_names(frame: pd.DataFrame) -> list[str]:
    """Quality metrics present in the records, in a stable reading order."""
    first = ["slate_acc", "total_acc", "mrr", "regret"]
    names = set()
    for record in frame["_record"]:
        names.update(k for k, v in record.get("metrics", {}).items() if isinstance(v, float) and is_quality(k))

    def order(name: str) -> tuple[str, int]:
        family, _, k = name.partition("@")
        return family, int(k) if k.isdigit() else 0

    return [m for m in first if m in names] + sorted(names - set(first), key=order)


def _fmt(value: Any, decimals: int | None = None) -> str:
    """Fixed decimals when given (accuracies), else 3 significant digits."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if decimals is not None:
        return f"{value:.{decimals}f}"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.3g}"


def _with_interval(mean: float, half: float, decimals: int | None = None) -> str:
    return _fmt(mean, decimals) if math.isnan(half) else f"{_fmt(mean, decimals)} ± {_fmt(half, decimals)}"


def swept_axes(frame: pd.DataFrame) -> list[str]:
    """Axes with several values; candidates is left out when it only follows the slate length."""
    axes = [a for a in AXIS_COLUMNS if frame[a].nunique() > 1]
    if "candidates" in axes and "slate_length" in axes:
        if (frame.groupby("slate_length")["candidates"].nunique() == 1).all():
            axes.remove("candidates")
    return axes


def _status_text(group: pd.DataFrame) -> str:
    counts = group["status"].value_counts()
    return ", ".join(f"{s}" if n == len(group) else f"{n}/{len(group)} {s}" for s, n in counts.items())


def summarize(group: pd.DataFrame, column: str) -> tuple[float, float, str | None]:
    """Mean over the seeds' ok cells, its 95% half-width, and a status note for failures."""
    ok = group[group["status"] == "ok"]
    note = _status_text(group[group["status"] != "ok"]) if len(ok) < len(group) else None
    if ok.empty or column not in ok or ok[column].isna().all():
        return math.nan, math.nan, note or _status_text(group)
    values = ok[column].dropna().tolist()
    if len(values) == 1 and column == "slate_acc":
        judged = ok["judged_slates"].iloc[0] if "judged_slates" in ok else math.nan
        slates = int(ok["test_slates"].iloc[0] if pd.isna(judged) else judged)
        return values[0], binomial_interval(values[0], slates), note
    mean, half = mean_interval(values)
    return mean, half, note


def compare_with_baseline(model: pd.DataFrame, base: pd.DataFrame, column: str = "slate_acc"):
    """Paired comparison on shared data seeds: (difference, half-width, p-value, test name) or None."""
    a = model[model["status"] == "ok"].set_index("seed")
    b = base[base["status"] == "ok"].set_index("seed")
    seeds = sorted(set(a.index) & set(b.index))
    if not seeds or column not in a or column not in b:
        return None
    if len(seeds) == 1 and column == "slate_acc":
        hits_a, hits_b = _hits(a.loc[seeds[0], "_record"]), _hits(b.loc[seeds[0], "_record"])
        if hits_a is None or hits_b is None or len(hits_a) != len(hits_b):
            return None
        return (*paired_slates(hits_a, hits_b), "McNemar")
    if len(seeds) < 2:
        return None
    return (*paired_seeds(a.loc[seeds, column].tolist(), b.loc[seeds, column].tolist()), "paired t")


def _memory_header(frame: pd.DataFrame) -> str:
    return header("cuda_peak_allocated_train_mib" if (frame["device"] == "cuda").any() else "cpu_peak_rss_mib")


def _column_header(frame: pd.DataFrame, column: str) -> str:
    return _memory_header(frame) if column == PEAK_MEMORY else header(column)


def _higher_is_better(column: str) -> bool:
    entry = lookup("cpu_peak_rss_mib" if column == PEAK_MEMORY else column)
    return entry is None or entry.direction is not Direction.LOWER


def ranking_metric(frame: pd.DataFrame) -> str | None:
    """The headline's one ranking metric: NDCG at the largest k <= 5."""
    ndcg = [n for n in headline_metrics(frame) if n.startswith("ndcg@")]
    return ndcg[0] if ndcg else None


def headline_table(frame: pd.DataFrame, baseline: str) -> pd.DataFrame:
    """At most nine columns, sorted by the primary accuracy; reference models (oracle, random...) last, in italics."""
    base = frame[frame["model"] == baseline]
    ranking = ranking_metric(frame)
    rows, order = [], []
    for model, group in frame.groupby("model", sort=False):
        reference = model in REFERENCE_MODELS
        row: dict[str, Any] = {"model": f"_{model}_" if reference else model}
        params = group["parameters"].dropna() if "parameters" in group else []
        row["params"] = f"{int(params.iloc[0]):,}" if len(params) else "–"
        mean, half, note = summarize(group, PRIMARY)
        row[PRIMARY] = note if math.isnan(mean) else _with_interval(mean, half, 3)
        delta = compare_with_baseline(group, base) if model != baseline and not base.empty else None
        row[f"Δ {PRIMARY} vs {baseline}"] = (
            f"{delta[0]:+.3f}{'*' if delta[2] < SIGNIFICANCE else ''}"
            if delta
            else ("baseline" if model == baseline else "–")
        )
        if ranking:
            value, _, _ = summarize(group, ranking)
            row[ranking] = _fmt(value, 3)
        for column in ("train_samples_per_s", "infer_samples_per_s", "latency_b1_p50_ms", PEAK_MEMORY):
            value, _, _ = summarize(group, column)
            row[_column_header(frame, column)] = _fmt(value)
        rows.append(row)
        order.append((reference, -(mean if not math.isnan(mean) else -math.inf)))
    ranked = [row for _, row in sorted(zip(order, rows, strict=True), key=lambda pair: pair[0])]
    return pd.DataFrame(ranked)


def headline_metrics(frame: pd.DataFrame) -> list[str]:
    """The overview's quality columns: slate_acc, total_acc, ndcg and map at the largest k <= 5, mrr, regret."""
    names = metric_names(frame)

    def at_most_5(prefix: str) -> list[str]:
        ks = [int(n.split("@")[1]) for n in names if n.startswith(prefix + "@")]
        small = [k for k in ks if k <= 5]
        return [f"{prefix}@{max(small)}"] if small else []

    return (
        [n for n in ("slate_acc", "total_acc") if n in names]
        + at_most_5("ndcg")
        + at_most_5("map")
        + [n for n in ("mrr", "regret") if n in names]
    )


def ranking_table(frame: pd.DataFrame) -> pd.DataFrame:
    """Every quality metric of every model, mean (± 95% CI over seeds when there are several)."""
    rows = []
    for model, group in frame.groupby("model", sort=False):
        row: dict[str, Any] = {"model": model}
        for metric in metric_names(frame):
            mean, half, note = summarize(group, metric)
            row[metric] = note if math.isnan(mean) else _with_interval(mean, half, 3)
        rows.append(row)
    return pd.DataFrame(rows)


def overview_table(frame: pd.DataFrame, baseline: str) -> pd.DataFrame:
    """Models as rows at one point: headline metrics as mean (± 95% CI), speed and memory."""
    base = frame[frame["model"] == baseline]
    metrics = headline_metrics(frame)
    rows = []
    for model, group in frame.groupby("model", sort=False):
        row: dict[str, Any] = {"model": model, "seeds ok": f"{(group['status'] == 'ok').sum()}/{len(group)}"}
        params = group["parameters"].dropna() if "parameters" in group else []
        row["params"] = f"{int(params.iloc[0]):,}" if len(params) else "–"
        for metric in metrics:
            mean, half, note = summarize(group, metric)
            row[metric] = note if math.isnan(mean) else _with_interval(mean, half, 3)
        delta = compare_with_baseline(group, base) if model != baseline and not base.empty else None
        if delta:
            diff, half, p, _ = delta
            mark = "*" if p < SIGNIFICANCE else ""
            row[f"Δ slate_acc vs {baseline}"] = f"{diff:+.3f} ± {half:.3f}{mark}"
            row["p"] = f"{p:.2g}"
        else:
            row[f"Δ slate_acc vs {baseline}"] = "–"
            row["p"] = "–"
        for column in (
            "train_samples_per_s",
            "infer_samples_per_s",
            "latency_b1_p50_ms",
            "latency_b1_p99_ms",
            PEAK_MEMORY,
            "train_flops_per_sample",
            "train_mfu",
            "wall_seconds",
        ):
            mean, _, _ = summarize(group, column)
            label = "train MFU (%)" if column == "train_mfu" else _column_header(frame, column)
            row[label] = _fmt(mean * 100 if column == "train_mfu" else mean)
        rows.append(row)
    return pd.DataFrame(rows)


def reference_point(frame: pd.DataFrame, axes: list[str]) -> dict[str, Any]:
    """Each swept axis at its smallest value (the founding kl loss, when it is among the losses)."""
    return {axis: "kl" if axis == "loss" and "kl" in set(frame[axis]) else frame[axis].min() for axis in axes}


def _value_label(frame: pd.DataFrame, axis: str, value: Any) -> str:
    label = f"{AXIS_LABELS[axis]} = {value}"
    if axis == "slate_length":
        candidates = frame.loc[frame[axis] == value, "candidates"].unique()
        if len(candidates) == 1:
            label += f" (S {candidates[0]})"
    return label


def axis_table(frame: pd.DataFrame, axis: str, column: str, baseline: str, higher_is_better: bool) -> pd.DataFrame:
    """Models as rows, the axis's values as columns; best per column in bold."""
    values = sorted(frame[axis].unique())
    cells: dict[str, dict[Any, str]] = {}
    means: dict[Any, dict[str, float]] = {v: {} for v in values}
    for model, group in frame.groupby("model", sort=False):
        cells[model] = {}
        for value in values:
            at = group[group[axis] == value]
            if at.empty:
                cells[model][value] = "–"
                continue
            mean, half, note = summarize(at, column)
            if math.isnan(mean):
                cells[model][value] = note or "–"
                continue
            text = _with_interval(mean, half, 3 if column == "slate_acc" else None)
            if column == "slate_acc" and model != baseline:
                base = frame[(frame["model"] == baseline) & (frame[axis] == value)]
                delta = compare_with_baseline(at, base) if not base.empty else None
                if delta and delta[2] < SIGNIFICANCE:
                    text += " †"
            if note:
                text += f" ({note})"
            cells[model][value] = text
            means[value][model] = mean
    for value in values:
        if means[value]:
            pick = max if higher_is_better else min
            best = pick(means[value], key=means[value].get)
            cells[best][value] = f"**{cells[best][value]}**"
    table = pd.DataFrame.from_dict(cells, orient="index", columns=values)
    table.index.name = "model"
    table.columns = [_value_label(frame, axis, v) for v in values]
    return table.reset_index()


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of points no other point beats on both coordinates (higher is better)."""
    front = []
    for i, (x, y) in enumerate(points):
        if not any((x2 >= x and y2 >= y) and (x2 > x or y2 > y) for x2, y2 in points):
            front.append(i)
    return sorted(front, key=lambda i: points[i][0])


def write_plots(frame: pd.DataFrame, axes: list[str], run_dir: Path) -> list[tuple[str, str]]:
    """PNG plots next to the report; returns (title, file name) pairs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = frame[frame["status"] == "ok"]
    if ok.empty:
        return []
    written = []
    reference = reference_point(frame, axes)

    def at_reference(data: pd.DataFrame, free: str) -> pd.DataFrame:
        for axis in axes:
            if axis != free:
                data = data[data[axis] == reference[axis]]
        return data

    memory = _memory_header(frame)
    line_plots = [
        ("slate_length", "slate_acc", "slate accuracy", "accuracy_vs_slate_length.png", False),
        ("batch_size", "train_samples_per_s", "training throughput (samples/s)", "throughput_vs_batch_size.png", True),
        ("batch_size", PEAK_MEMORY, memory, "memory_vs_batch_size.png", True),
    ]
    for axis, column, label, name, log in line_plots:
        if axis not in axes:
            continue
        fig, ax = plt.subplots(figsize=(6.4, 4.2))
        data = at_reference(ok, axis)
        for model, group in data.groupby("model", sort=False):
            stats_by_value = [(v, *mean_interval(g[column].dropna().tolist())) for v, g in group.groupby(axis)]
            xs, ys, errs = zip(*stats_by_value, strict=True)
            ax.errorbar(xs, ys, yerr=[0 if math.isnan(e) else e for e in errs], marker="o", capsize=3, label=model)
        if log:
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
        elif column == "slate_acc":
            ax.set_ylim(0, 1.02)  # an accuracy; with few seeds the t-interval can reach past 1
        ax.set_xlabel(AXIS_LABELS[axis])
        ax.set_ylabel(label)
        ax.set_title(f"{label} vs {AXIS_LABELS[axis]} (mean over seeds, 95% t-interval)", fontsize=10)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(run_dir / name, dpi=110)
        plt.close(fig)
        written.append((f"{label} vs {AXIS_LABELS[axis]}", name))

    summary = (
        ok.groupby(["model", "point"], sort=False)
        .agg(acc=("slate_acc", "mean"), speed=("infer_samples_per_s", "mean"))
        .reset_index()
        .dropna()
    )
    if not summary.empty:
        fig, ax = plt.subplots(figsize=(6.4, 4.2))
        for model, group in summary.groupby("model", sort=False):
            ax.scatter(group["speed"], group["acc"], label=model, alpha=0.8)
        points = list(zip(summary["speed"], summary["acc"], strict=True))
        front = pareto_front(points)
        ax.plot([points[i][0] for i in front], [points[i][1] for i in front], "k--", lw=1, label="Pareto front")
        ax.scatter(
            [points[i][0] for i in front], [points[i][1] for i in front], s=80, facecolors="none", edgecolors="k"
        )
        ax.set_xscale("log")
        ax.set_xlabel("inference throughput at the cell's batch size (samples/s)")
        ax.set_ylabel("slate accuracy")
        ax.set_title("accuracy vs inference throughput (each point: one model at one shape)")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(run_dir / "accuracy_vs_throughput.png", dpi=110)
        plt.close(fig)
        written.append(("accuracy vs inference throughput, Pareto front dashed", "accuracy_vs_throughput.png"))
    return written


def _describe_point(record: dict[str, Any], axes_fixed: dict[str, Any] | None = None) -> str:
    c = record["config"]
    w, t = dict(c["workload"]), c["train"]
    w.update(axes_fixed or {})
    if w.get("data", "synthetic") == "letor":
        d = record.get("data") or {}
        data = (
            f"LETOR data {w.get('data_path')}: {d.get('train_lists', '?')} / {d.get('valid_lists', '?')} / "
            f"{d.get('test_lists', '?')} train / valid / test queries, {d.get('item_dim', '?')} feature columns; "
            f"initial ranker {w.get('initial_ranker')}, labels {w.get('labels')}"
        )
    else:
        noise = w.get("initial_noise")
        parts = [f"slate lengths {w['slate_min']}..{w['slate_length']}"] if w.get("slate_min") else []
        parts.append("initial order random" if noise is None else f"initial order by utility + noise {noise:g}")
        click_model = w.get("click_model", "best")
        parts.append(f"{click_model} clicks" + (f" (eta {w.get('eta')})" if click_model == "position-biased" else ""))
        parts.append(f"labels {w.get('labels', 'clicks')}")
        data = "synthetic: " + ", ".join(parts)
    return (
        f"{data}; batch {w['batch_size']} x {w['batches']} batches x {t['epochs']} epochs; {w['candidates']} "
        f"candidates, slate {w['slate_length']}; user dim {w['user_dim']}, item dim {w['item_dim']}; test "
        f"{w['test_slates']} slates; loss {t['loss']}, lr {t['lr']}; device {c['device']}, {c['precision']}"
        + (", compiled" if c.get("compile") else "")
    )


HOW_TO_READ = """\
## How to read this

- **slate_acc**: share of judged test slates whose highest-scored *displayed* item carries the slate's highest
  label (with the founding one-click data: is the clicked item; the founding blog's metric). A slate is *judged*
  when a displayed item is relevant (label > 0); label-based metrics average over judged slates.
  **total_acc**: the highest-scored item over the *whole candidate list* is such an item (undisplayed
  candidates carry no label, so it is capped well below 1). **mrr**: mean reciprocal rank of the best-ranked
  relevant item. **map@k**: AP@k = Σ precision@i at the relevant items of the top k / min(#relevant, k).
  **precision@k**: relevant items in the top k / min(k, slate length).
- **ndcg@k**: NDCG of the displayed slate in the model's order, discount 1/log2(rank+1), 0 for a slate with no
  gain to earn; on synthetic data the linear gain is the true utility minus the slate's lowest (every slate
  counts), on LETOR data the relevance grade. **label_ndcg@k** (synthetic): the same with the labels (clicks
  or grades) as gains, over judged slates. **regret**: true utility of the best displayed item minus that of
  the model's top displayed item, mean over all test slates (LETOR: in relevance grades).
- **Intervals** are 95%. With one seed, slate_acc's interval is the normal-approximation binomial interval over
  test slates; with several seeds, every metric is the mean over seeds ± the Student-t interval of that mean.
- **Δ slate_acc vs {baseline}** and **p**: a paired comparison with the baseline on the same data seeds. One seed:
  per-slate paired difference on the same test slates (interval mean ± 1.96·sd/√n) with McNemar's exact test.
  Several seeds: the per-seed differences, Student-t interval and a paired t-test. `*` (overview) and `†` (axis
  tables) mark p < {alpha}. **Bold** marks the best model in each column.
- **train**: training samples/s over steady-state steps (the first epoch's warm-up steps and per-epoch validation
  excluded). **inference**: median samples/s of eval-mode forward passes at the cell's batch size.
  **latency b1**: one eval-mode forward pass at batch size 1 (an online request), percentiles over requests.
- **peak RSS**: the cell process's peak resident memory (each cell runs in its own process unless
  `--isolation none`, in which case it is the whole run's). **CUDA peak allocated**:
  `torch.cuda.max_memory_allocated` during training.
- **FLOPs/sample**: matmul FLOPs of one training step (forward + backward) per sample, counted by
  `torch.utils.flop_counter.FlopCounterMode`. **MFU**: achieved training FLOP/s over the device's peak for the
  cell's precision (data-sheet dense peak on GPUs; on CPUs a cached matmul probe).
- Cells that failed show their status (`failed`, `oom`, `timeout`, `diverged`) instead of numbers.
"""


def render(records: list[dict[str, Any]], title: str, baseline: str, plots: list[tuple[str, str]]) -> str:
    lines = [f"# rerank-bench report: {title}", ""]
    if not records:
        return "\n".join([*lines, "No records yet.", ""])
    frame = records_frame(records)
    last = records[-1]
    env = last.get("environment") or next((r["environment"] for r in records if r.get("environment")), {})
    command = last.get("run", {}).get("command")
    if command:
        lines += [f"Command: `{command}`", ""]
    if env:
        lines += [
            f"Machine: {env.get('device_name')} ({env.get('device')}), {env.get('threads')} torch threads, "
            f"torch {env.get('torch')}, python {env.get('python')}, git {env.get('git_revision')}",
            "",
        ]
    axes = swept_axes(frame)
    seeds = sorted(frame["seed"].unique())
    statuses = frame["status"].value_counts().to_dict()
    lines += [
        f"{len(frame)} cells: {frame['model'].nunique()} models x {len(seeds)} seed(s)"
        + (f" x sweep over {', '.join(AXIS_LABELS[a] for a in axes)}" if axes else "")
        + f"; status {', '.join(f'{n} {s}' for s, n in statuses.items())}.",
        "",
    ]
    reference = reference_point(frame, axes)
    at_reference = frame
    for axis in axes:
        at_reference = at_reference[at_reference[axis] == reference[axis]]
    if at_reference["point"].nunique() == 1:
        lines += [f"## Overview: {_describe_point(at_reference['_record'].iloc[0])}", ""]
        if axes:
            lines += ["(the sweep's reference point: each swept axis at its smallest value; a swept loss at kl)", ""]
        lines += [headline_table(at_reference, baseline).to_markdown(index=False), ""]
        options = {m: g["_record"].iloc[0]["config"]["model_kwargs"] for m, g in at_reference.groupby("model")}
        references = [f"`{name}` {role}" for name, role in REFERENCE_MODELS.items() if name in options]
        lines += [
            f"Sorted by {PRIMARY}; * marks a difference from `{baseline}` significant at p < {SIGNIFICANCE}."
            + (" Reference rows (in italics, last): " + "; ".join(references) + "." if references else ""),
            "",
        ]
        lines += ["### Every headline value", "", overview_table(at_reference, baseline).to_markdown(index=False), ""]
        lines += ["### Ranking metrics", "", ranking_table(at_reference).to_markdown(index=False), ""]
        lines += ["Model options: " + "; ".join(f"{m} {o or 'defaults'}" for m, o in options.items()), ""]
    for axis in axes:
        fixed = {a: reference[a] for a in axes if a != axis}
        data = frame
        for other, value in fixed.items():
            data = data[data[other] == value]
        fixed_text = ", ".join(f"{AXIS_LABELS[a]} {v}" for a, v in fixed.items()) or "nothing else swept"
        lines += [f"## Across {AXIS_LABELS[axis]} ({fixed_text})", ""]
        for column in AXIS_METRICS:
            if column not in data or data[column].isna().all() and (data["status"] == "ok").any():
                continue
            lines += [f"### {_column_header(frame, column)}", ""]
            table = axis_table(data, axis, column, baseline, _higher_is_better(column))
            lines += [table.to_markdown(index=False), ""]
    if plots:
        lines += ["## Plots", ""]
        for caption, name in plots:
            lines += [f"![{caption}]({name})", ""]
    if axes or len(seeds) > 1:
        lines += ["## Every cell", ""]
        columns = [
            "model",
            "seed",
            *AXIS_COLUMNS,
            "status",
            "slate_acc",
            "train_samples_per_s",
            "latency_b1_p50_ms",
            PEAK_MEMORY,
            "wall_seconds",
        ]
        table = frame[[c for c in columns if c in frame]].copy()
        for c in (*AXIS_METRICS, "wall_seconds"):
            if c in table:
                shown = (table["status"] == "ok") | (c == "wall_seconds")
                table[c] = [_fmt(v) if keep else "–" for v, keep in zip(table[c], shown, strict=True)]
        lines += [table.to_markdown(index=False), ""]
    failures = frame[frame["status"] != "ok"]
    if not failures.empty:
        lines += ["## Cells that did not finish", ""]
        for _, row in failures.iterrows():
            error = str(row["error"] or "").strip().splitlines()
            lines.append(
                f"- `{row['model']}` seed {row['seed']} ({row['key']}): **{row['status']}** "
                f"{error[-1] if error else ''}"
            )
        lines.append("")
    lines.append(HOW_TO_READ.format(baseline=baseline, alpha=SIGNIFICANCE))
    return "\n".join(lines)


def write_report(run_dir: Path, baseline: str = "mlp") -> Path:
    records = latest_records(run_dir)
    plots = []
    if records:
        frame = records_frame(records)
        plots = write_plots(frame, swept_axes(frame), run_dir)
    path = run_dir / REPORT_FILE
    path.write_text(render(records, run_dir.name, baseline, plots), encoding="utf-8")
    return path
