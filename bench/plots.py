"""The report's plots (PNG, matplotlib without a display).

Every plot follows the same rules: each model has one colour and marker (bench/plot_style.py) and is named next
to its points; models that train nothing (oracle, random, initial) are reference lines, never points, and never
on a Pareto front; the accuracy axis is fitted to the trained models; intervals are error bars; a point measured
under contention is ringed in red; ticks show real values.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pandas as pd

from bench import catalog
from bench.plot_style import CONTENDED_EDGE, REFERENCE_COLOUR, model_styles, place_labels, real_ticks, wants_log
from bench.tables import AXIS_LABELS, PEAK_MEMORY, column_header, reference_point, summarize


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of points no other point beats on both coordinates (higher is better)."""
    front = []
    for i, (x, y) in enumerate(points):
        if not any((x2 >= x and y2 >= y) and (x2 > x or y2 > y) for x2, y2 in points):
            front.append(i)
    return sorted(front, key=lambda i: points[i][0])


LINE_PLOTS = (  # (axis, column, file): a metric along one swept axis, the others at the reference point
    ("slate_length", "slate_acc", "accuracy_vs_slate_length.png"),
    ("batch_size", "train_samples_per_s", "throughput_vs_batch_size.png"),
    ("batch_size", PEAK_MEMORY, "memory_vs_batch_size.png"),
)
SCATTER_PLOTS = (  # (x column, file, title): slate accuracy against a cost, each model at each shape
    ("infer_samples_per_s", "accuracy_vs_throughput.png", "Accuracy vs inference throughput"),
    (PEAK_MEMORY, "accuracy_vs_memory.png", "Accuracy vs peak memory"),
    ("parameters", "accuracy_vs_parameters.png", "Accuracy vs parameters"),
)
LATENCY_PLOT = "latency.png"
FRONT_NOTE = "dashed: Pareto front of the trained models"
CONTENDED_NOTE = "red ring: measured under contention (compare it with nothing)"


def write_plots(frame: pd.DataFrame, axes: list[str], run_dir: Path) -> list[tuple[str, str]]:
    """PNG plots next to the report; returns (title, file name) pairs. A plot the records hold no value for is
    not written, and a file of its name left by earlier records is removed."""
    import matplotlib

    matplotlib.use("Agg")

    ok = frame[frame["status"] == "ok"]
    if ok.empty:
        return []
    written = []
    reference = reference_point(frame, axes)
    at_reference = ok
    for axis in axes:
        at_reference = at_reference[at_reference[axis] == reference[axis]]
    for axis, column, name in LINE_PLOTS:
        if axis in axes:
            data = ok
            for other in axes:
                if other != axis:
                    data = data[data[other] == reference[other]]
            written.append((_line_plot(data, axis, column, column_header(frame, column), run_dir / name), name))
    for column, name, title in SCATTER_PLOTS:
        written.append((_scatter(ok, column, axes, title, run_dir / name), name))
    written.append((_latency(at_reference, run_dir / LATENCY_PLOT), LATENCY_PLOT))
    return [(title, name) for title, name in written if title is not None]


def _values(data: pd.DataFrame, column: str) -> pd.Series:
    return pd.to_numeric(data[column], errors="coerce") if column in data else pd.Series(dtype=float)


def _absent(data: pd.DataFrame, column: str, path: Path) -> bool:
    """The records hold no value of ``column`` (schema-1 records have no net memory): no plot, and no stale file."""
    if _values(data, column).notna().any():
        return False
    path.unlink(missing_ok=True)
    return True


def _half(value: float) -> float:
    return 0.0 if math.isnan(value) else value


def _trains(group: pd.DataFrame) -> bool:
    """Whether the model trained anything: a model that does not (a baseline) has no training throughput."""
    return bool(_values(group, "train_samples_per_s").notna().any())


def _contended(group: pd.DataFrame) -> bool:
    return any((r.get("conditions") or {}).get("contended") for r in group["_record"])


def _line_plot(data: pd.DataFrame, axis: str, column: str, label: str, path: Path) -> str | None:
    """``column`` of every model along ``axis``, with 95% intervals, each line named at its end; its title."""
    import matplotlib.pyplot as plt

    if _absent(data, column, path):
        return None
    fig, ax = plt.subplots(figsize=(6.8, 4.4))
    styles = model_styles(list(data["model"].unique()))
    labels, ys_all = [], []
    for model, group in data.groupby("model", sort=False):
        stats_by_value = [(v, *summarize(g, column)[:2]) for v, g in group.groupby(axis)]
        xs, ys, errs = zip(*stats_by_value, strict=True)
        style = styles[model]
        ax.errorbar(xs, ys, yerr=[_half(e) for e in errs], marker=style.marker, color=style.colour, capsize=3)
        if _contended(group):
            ax.scatter(xs, ys, s=160, facecolors="none", edgecolors=CONTENDED_EDGE, linewidths=1.5)
        if not math.isnan(ys[-1]):
            labels.append((xs[-1], ys[-1], model, style.colour))
        ys_all += [y for y in ys if not math.isnan(y)]
    xs_all = sorted(set(data[axis]))
    x_log = wants_log(xs_all)
    if x_log:
        ax.set_xscale("log", base=2)
    y_log = column != "slate_acc" and wants_log(ys_all)
    if y_log:
        ax.set_yscale("log")
    real_ticks(ax.xaxis, x_log, xs_all)
    real_ticks(ax.yaxis, y_log)
    ax.set_xlabel(AXIS_LABELS[axis])
    ax.set_ylabel(label)
    how = "median of pooled timing samples" if catalog.lookup(column) and catalog.lookup(column).timing else "mean"
    ax.set_title(f"{label} vs {AXIS_LABELS[axis]}\n({how} over seeds, 95% interval)", fontsize=10)
    ax.margins(x=0.12)
    fig.tight_layout()
    place_labels(ax, labels)
    _finish(fig, ax, path)
    return f"{label} vs {AXIS_LABELS[axis]}"


def _points(ok: pd.DataFrame, column: str, axes: list[str] | tuple[str, ...] = ()) -> pd.DataFrame:
    """Per model and shape: accuracy and ``column`` with their 95% half-widths, whether it trains, whether a
    cell ran contended, and the shape as its values of the swept ``axes`` (64/5/10)."""
    rows = []
    for (model, point), group in ok.groupby(["model", "point"], sort=False):
        acc, acc_half, _ = summarize(group, "slate_acc")
        x, x_half, _ = summarize(group, column)
        shape = "/".join(str(group.iloc[0][a]) for a in axes)
        rows.append(dict(model=model, point=point, acc=acc, acc_half=_half(acc_half), x=x, x_half=_half(x_half),
                         trains=_trains(group), contended=_contended(group), shape=shape))  # fmt: skip
    return pd.DataFrame(rows)


def _cheaper_is_higher(column: str) -> bool:
    """On a Pareto front, more of ``column`` is better (throughput), or less (memory, parameters: a cost)."""
    entry = catalog.lookup("cpu_peak_rss_mib" if column == PEAK_MEMORY else column)
    return entry is not None and entry.direction is catalog.Direction.HIGHER


def _scatter(ok: pd.DataFrame, column: str, axes: list[str], title: str, path: Path) -> str | None:
    """Slate accuracy against ``column`` for the trained models, the baselines as reference lines."""
    import matplotlib.pyplot as plt

    if "slate_acc" not in ok or _absent(ok, column, path):
        return None
    summary = _points(ok, column, axes).dropna(subset=["acc"])
    trained = summary[summary["trains"]].dropna(subset=["x"]) if not summary.empty else summary
    if trained.empty:
        path.unlink(missing_ok=True)
        return None
    fig, ax = plt.subplots(figsize=(7.2, 4.8))
    styles = model_styles(list(summary["model"].unique()))
    for row in trained.itertuples():
        style = styles[row.model]
        ax.errorbar(row.x, row.acc, xerr=row.x_half, yerr=row.acc_half, fmt=style.marker, color=style.colour,
                    ms=7, capsize=2, elinewidth=0.8)  # fmt: skip
        if row.contended:
            ax.scatter([row.x], [row.acc], s=200, facecolors="none", edgecolors=CONTENDED_EDGE, linewidths=1.5)
    sign = 1 if _cheaper_is_higher(column) else -1
    points = list(zip(trained["x"] * sign, trained["acc"], strict=True))
    front = [(x * sign, y) for x, y in (points[i] for i in pareto_front(points))]
    ax.plot([x for x, _ in front], [y for _, y in front], "k--", lw=1, zorder=0)
    log = wants_log(list(trained["x"]))
    if log:
        ax.set_xscale("log")
    real_ticks(ax.xaxis, log)
    real_ticks(ax.yaxis, False)
    _fit_accuracy(ax, trained)
    _reference_lines(ax, summary[~summary["trains"]])
    ax.set_xlabel(column_header(ok, column) + (" (log scale)" if log else ""))
    ax.set_ylabel("slate accuracy")
    ax.set_title(title, fontsize=11)
    notes = [FRONT_NOTE, "bars: 95% intervals"] + ([CONTENDED_NOTE] if trained["contended"].any() else [])
    if trained["point"].nunique() > 1:
        notes.append("point labels: " + " / ".join(AXIS_LABELS[a] for a in axes))
    fig.text(0.01, 0.01, "; ".join(notes), fontsize=7, color=REFERENCE_COLOUR, wrap=True)
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    place_labels(ax, _scatter_labels(trained, axes, styles))
    _finish(fig, ax, path, bottom=0.04)
    return f"{title} ({FRONT_NOTE})"


def _scatter_labels(trained: pd.DataFrame, axes: list[str], styles: dict[str, Any]) -> list[tuple]:
    """The model's name at each point (one shape), or at its most accurate point and the shape at the others."""
    labels = []
    several = trained["point"].nunique() > 1
    best = trained.loc[trained.groupby("model")["acc"].idxmax()].index if several else trained.index
    for index, row in trained.iterrows():
        shape = row["shape"] if several else ""
        text = f"{row['model']} {shape}".strip() if index in best else shape
        labels.append((row["x"], row["acc"], text + ("!" if row["contended"] else ""), styles[row["model"]].colour))
    return labels


def _fit_accuracy(ax: Any, trained: pd.DataFrame) -> None:
    """The accuracy axis spans the trained models' values with a margin (an interval of two seeds may reach past
    it: its bar is cut at the edge)."""
    low, high = float(trained["acc"].min()), float(trained["acc"].max())
    pad = max(high - low, 0.01) * 0.2
    ax.set_ylim(max(low - pad, 0.0), min(high + pad, 1.05))


def _reference_lines(ax: Any, references: pd.DataFrame) -> None:
    """Each model that trains nothing as a dotted line at its accuracy, named at the right; one off the fitted
    axis is named at the top or bottom edge with its value."""
    from matplotlib.transforms import blended_transform_factory

    low, high = ax.get_ylim()
    where = blended_transform_factory(ax.transAxes, ax.transData)
    above, below = [], []
    for model, group in references.groupby("model", sort=False):
        acc = float(group["acc"].mean())
        if low <= acc <= high:
            ax.axhline(acc, color=REFERENCE_COLOUR, ls=":", lw=1, zorder=0)
            ax.text(0.995, acc, f"{model} {acc:.3f}", transform=where, ha="right", va="bottom", fontsize=7.5,
                    color=REFERENCE_COLOUR, style="italic")  # fmt: skip
        else:
            (above if acc > high else below).append(f"{model} {acc:.3f}")
    for names, y, va, arrow in ((above, 0.99, "top", "↑"), (below, 0.01, "bottom", "↓")):
        if names:
            ax.text(0.01, y, f"{arrow} off the scale: {', '.join(names)}", transform=ax.transAxes, ha="left", va=va,
                    fontsize=7.5, color=REFERENCE_COLOUR, style="italic")  # fmt: skip


def _latency(at_reference: pd.DataFrame, path: Path) -> str | None:
    """Batch-1 latency per model at the reference shape: p50 with its 95% interval, a whisker to p95."""
    import matplotlib.pyplot as plt

    if _absent(at_reference, "latency_b1_p50_ms", path):
        return None
    rows = []
    for model, group in at_reference.groupby("model", sort=False):
        p50, half, _ = summarize(group, "latency_b1_p50_ms")
        p95 = summarize(group, "latency_b1_p95_ms")[0] if "latency_b1_p95_ms" in group else math.nan
        if not math.isnan(p50):
            rows.append((model, p50, _half(half), p95, _trains(group), _contended(group)))
    rows.sort(key=lambda r: -r[1])  # the fastest at the top
    fig, ax = plt.subplots(figsize=(7.2, 1.4 + 0.36 * len(rows)))
    styles = model_styles([r[0] for r in rows])
    for y, (model, p50, half, p95, trains, contended) in enumerate(rows):
        colour = styles[model].colour if trains else REFERENCE_COLOUR
        if not math.isnan(p95):
            ax.hlines(y, p50, p95, color=colour, lw=1.2)
            ax.plot([p95], [y], "|", color=colour, ms=10)
        ax.errorbar(p50, y, xerr=half, fmt=styles[model].marker, color=colour, ms=7, capsize=2)
        if contended:
            ax.scatter([p50], [y], s=200, facecolors="none", edgecolors=CONTENDED_EDGE, linewidths=1.5)
    ax.set_yticks(range(len(rows)), [r[0] + ("" if r[4] else " (trains nothing)") for r in rows], fontsize=8.5)
    log = wants_log([v for r in rows for v in (r[1], r[3]) if not math.isnan(v)])
    if log:
        ax.set_xscale("log")
    real_ticks(ax.xaxis, log)
    ax.set_xlabel("one request at batch size 1 (ms)" + (", log scale" if log else ""))
    ax.set_title("Batch-1 latency per model: p50 (95% interval), line to p95", fontsize=10)
    _finish(fig, ax, path)
    return "Batch-1 latency per model (p50 with its 95% interval, line to p95)"


def _finish(fig: Any, ax: Any, path: Path, bottom: float = 0.0) -> None:
    import matplotlib.pyplot as plt

    ax.grid(True, alpha=0.3)
    fig.tight_layout(rect=(0, bottom, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)
