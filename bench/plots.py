"""The report's plots (PNG, matplotlib without a display)."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

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


def write_plots(frame: pd.DataFrame, axes: list[str], run_dir: Path) -> list[tuple[str, str]]:
    """PNG plots next to the report; returns (title, file name) pairs."""
    import matplotlib

    matplotlib.use("Agg")

    ok = frame[frame["status"] == "ok"]
    if ok.empty:
        return []
    written = []
    reference = reference_point(frame, axes)
    for axis, column, name in LINE_PLOTS:
        if axis not in axes:
            continue
        data = ok
        for other in axes:
            if other != axis:
                data = data[data[other] == reference[other]]
        title = _line_plot(data, axis, column, column_header(frame, column), run_dir / name)
        if title is not None:
            written.append((title, name))
    if {"slate_acc", "infer_samples_per_s"} <= set(ok.columns):  # not when only cells that measured nothing
        written += _accuracy_vs_throughput(ok, run_dir / "accuracy_vs_throughput.png")
    return written


def _line_plot(data: pd.DataFrame, axis: str, column: str, label: str, path: Path) -> str | None:
    """``column`` of every model along ``axis``, with 95% intervals; its title, or None (and no file) when the
    records hold no value of it (schema-1 records have no net memory)."""
    import matplotlib.pyplot as plt

    values = pd.to_numeric(data[column], errors="coerce") if column in data else pd.Series(dtype=float)
    if not values.notna().any():
        path.unlink(missing_ok=True)  # a plot written from other records would not match these
        return None
    # A log scale cannot show 0 or less: a cell run inline may grow no memory over its baseline.
    log_y = (values.dropna() > 0).all()
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for model, group in data.groupby("model", sort=False):
        stats_by_value = [(v, *summarize(g, column)[:2]) for v, g in group.groupby(axis)]
        xs, ys, errs = zip(*stats_by_value, strict=True)
        ax.errorbar(xs, ys, yerr=[0 if math.isnan(e) else e for e in errs], marker="o", capsize=3, label=model)
    if column == "slate_acc":
        ax.set_ylim(0, 1.02)  # an accuracy; with few seeds the t-interval can reach past 1
    else:
        ax.set_xscale("log", base=2)
        if log_y:
            ax.set_yscale("log")
    ax.set_xlabel(AXIS_LABELS[axis])
    ax.set_ylabel(label)
    how = "median of pooled timing samples" if column == "train_samples_per_s" else "mean over seeds"
    ax.set_title(f"{label} vs {AXIS_LABELS[axis]} ({how}, 95% interval)", fontsize=10)
    _finish(fig, ax, path)
    return f"{label} vs {AXIS_LABELS[axis]}"


def _accuracy_vs_throughput(ok: pd.DataFrame, path: Path) -> list[tuple[str, str]]:
    """Each model at each shape: slate accuracy against inference throughput, with the Pareto front."""
    import matplotlib.pyplot as plt

    summary = (
        ok.groupby(["model", "point"], sort=False)
        .agg(acc=("slate_acc", "mean"), speed=("infer_samples_per_s", "mean"))
        .reset_index()
        .dropna()
    )
    if summary.empty:
        return []
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for model, group in summary.groupby("model", sort=False):
        ax.scatter(group["speed"], group["acc"], label=model, alpha=0.8)
    points = list(zip(summary["speed"], summary["acc"], strict=True))
    front = [points[i] for i in pareto_front(points)]
    ax.plot([x for x, _ in front], [y for _, y in front], "k--", lw=1, label="Pareto front")
    ax.scatter([x for x, _ in front], [y for _, y in front], s=80, facecolors="none", edgecolors="k")
    ax.set_xscale("log")
    ax.set_xlabel("inference throughput at the cell's batch size (samples/s)")
    ax.set_ylabel("slate accuracy")
    ax.set_title("accuracy vs inference throughput (each point: one model at one shape)")
    _finish(fig, ax, path)
    return [("accuracy vs inference throughput, Pareto front dashed", path.name)]


def _finish(fig, ax, path: Path) -> None:
    import matplotlib.pyplot as plt

    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
