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

    memory = column_header(frame, PEAK_MEMORY)
    line_plots = [
        ("slate_length", "slate_acc", "slate accuracy", "accuracy_vs_slate_length.png", False),
        ("batch_size", "train_samples_per_s", "training throughput (samples/s)", "throughput_vs_batch_size.png", True),
        ("batch_size", PEAK_MEMORY, memory, "memory_vs_batch_size.png", True),
    ]
    for axis, column, label, name, log in line_plots:
        if axis not in axes:
            continue
        data = at_reference(ok, axis)
        values = pd.to_numeric(data[column], errors="coerce") if column in data else pd.Series(dtype=float)
        if not values.notna().any():  # e.g. schema-1 records have no net memory
            (run_dir / name).unlink(missing_ok=True)  # an earlier report's plot would no longer match the records
            continue
        # A log scale cannot show 0 or less: a cell run inline may grow no memory over its baseline.
        log_y = (values.dropna() > 0).all()
        fig, ax = plt.subplots(figsize=(6.4, 4.2))
        for model, group in data.groupby("model", sort=False):
            stats_by_value = [(v, *summarize(g, column)[:2]) for v, g in group.groupby(axis)]
            xs, ys, errs = zip(*stats_by_value, strict=True)
            ax.errorbar(xs, ys, yerr=[0 if math.isnan(e) else e for e in errs], marker="o", capsize=3, label=model)
        if log:
            ax.set_xscale("log", base=2)
            if log_y:
                ax.set_yscale("log")
        elif column == "slate_acc":
            ax.set_ylim(0, 1.02)  # an accuracy; with few seeds the t-interval can reach past 1
        ax.set_xlabel(AXIS_LABELS[axis])
        ax.set_ylabel(label)
        how = "median of pooled timing samples" if column == "train_samples_per_s" else "mean over seeds"
        ax.set_title(f"{label} vs {AXIS_LABELS[axis]} ({how}, 95% interval)", fontsize=10)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(run_dir / name, dpi=110)
        plt.close(fig)
        written.append((f"{label} vs {AXIS_LABELS[axis]}", name))

    if not {"slate_acc", "infer_samples_per_s"} <= set(ok.columns):  # e.g. only cells that measured nothing
        return written
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
