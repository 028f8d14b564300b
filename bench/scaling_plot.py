"""The scaling plots: each cost against a shape axis on log-log scales, one line per model with its fitted slope and
the band of its 95% interval, each line labelled at its end with the model and the exponent (no legend)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from bench.scaling import COSTS, MIN_POINTS, SHAPE_SYMBOLS, Cost, cost_points, fit_exponent
from bench.tables import AXIS_LABELS, axis_line, reference_point

LABEL_GAP = 0.075  # least distance between two end labels, as a share of the panel's log height
UNITS = {"training time per slate": 1e3, "batch-1 latency": 1.0, "memory over baseline": 1.0}  # to ms, ms, MiB
UNIT_NAMES = {"training time per slate": "ms per slate", "batch-1 latency": "ms", "memory over baseline": "MiB"}


def write_scaling_plots(frame: pd.DataFrame, axes: list[str], run_dir: Path) -> list[tuple[str, str]]:
    """One PNG per swept shape axis with at least MIN_POINTS values: (caption, file name) pairs."""
    import matplotlib

    matplotlib.use("Agg")
    written = []
    reference = reference_point(frame, axes)
    for axis in axes:
        line = axis_line(frame, axis, reference)
        line = line[line["status"] == "ok"]
        if axis not in SHAPE_SYMBOLS or line[axis].nunique() < MIN_POINTS:
            continue
        name = f"scaling_vs_{axis}.png"
        _figure(line, axis, run_dir / name)
        written.append((f"how cost grows with {AXIS_LABELS[axis]}: fitted log-log slopes, 95% bands", name))
    return written


def _figure(line: pd.DataFrame, axis: str, path: Path) -> None:
    import matplotlib.pyplot as plt

    fig, panels = plt.subplots(1, len(COSTS), figsize=(5.2 * len(COSTS), 4.6))
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    models = list(dict.fromkeys(line["model"]))
    for panel, cost in zip(panels, COSTS, strict=True):
        panel.set_xscale("log")
        panel.set_yscale("log")
        ends = []
        for index, model in enumerate(models):
            colour = colours[index % len(colours)]
            end = _model_line(panel, line[line["model"] == model], axis, cost, colour)
            if end is not None:
                ends.append((*end, model, colour))
        _label_ends(panel, ends)
        panel.set_xlabel(AXIS_LABELS[axis])
        panel.set_ylabel(f"{cost.label} ({UNIT_NAMES[cost.label]})")
        panel.set_title(f"{cost.label} ~ {SHAPE_SYMBOLS[axis]}^k", fontsize=10)
        panel.grid(True, which="both", alpha=0.25)
    fig.suptitle(
        f"How cost grows with {AXIS_LABELS[axis]}: medians, fitted power law (band: 95% interval of k); "
        "label: model k (– not fitted)",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _model_line(panel, model_line: pd.DataFrame, axis: str, cost: Cost, colour: str) -> tuple[float, float, str] | None:
    """One model's medians, fitted line and band; (x, y, exponent text) where its label goes, or None."""
    values, samples, _ = cost_points(model_line, axis, cost)
    kept = [(float(v), float(np.median(s)) * UNITS[cost.label]) for v, s in zip(values, samples, strict=True) if s]
    kept = [(x, y) for x, y in kept if y > 0]
    if not kept:
        return None
    xs, ys = zip(*kept, strict=True)
    fit = fit_exponent(values, samples)
    if not fit.fitted:
        panel.plot(xs, ys, "o:", color=colour, ms=3, lw=1, alpha=0.6)
        return xs[-1], ys[-1], "–"
    panel.plot(xs, ys, "o", color=colour, ms=4)
    grid = np.linspace(math.log(min(xs)), math.log(max(xs)), 50)
    centre_x, centre_y = fit.centre[0], fit.centre[1] + math.log(UNITS[cost.label])
    line = np.exp(centre_y + fit.slope * (grid - centre_x))
    low = np.exp(centre_y + np.where(grid > centre_x, fit.low, fit.high) * (grid - centre_x))
    high = np.exp(centre_y + np.where(grid > centre_x, fit.high, fit.low) * (grid - centre_x))
    panel.plot(np.exp(grid), line, "-", color=colour, lw=1.5)
    panel.fill_between(np.exp(grid), low, high, color=colour, alpha=0.12, lw=0)
    return float(np.exp(grid[-1])), float(line[-1]), f"{fit.slope:.2f}"


def _label_ends(panel, ends: list[tuple[float, float, str, str, str]]) -> None:
    """Each model's name and exponent just right of its line's end, pushed apart vertically (in log space) so that
    no two overlap."""
    if not ends:
        return
    low, high = min(math.log(y) for _, y, *_ in ends), max(math.log(y) for _, y, *_ in ends)
    gap = LABEL_GAP * max(high - low, 1.0)
    placed: list[float] = []
    for x, y, text, model, colour in sorted(ends, key=lambda end: end[1]):
        position = math.log(y) if not placed else max(math.log(y), placed[-1] + gap)
        placed.append(position)
        panel.annotate(
            f"{model} {text}",
            xy=(x, y),
            xytext=(x * 1.08, math.exp(position)),
            fontsize=7,
            color=colour,
            va="center",
            arrowprops={"arrowstyle": "-", "color": colour, "lw": 0.5, "alpha": 0.5},
        )
    panel.set_xlim(right=max(x for x, *_ in ends) * 3.5)  # room for the labels on the right
    bottom, top = panel.get_ylim()
    panel.set_ylim(bottom, max(top, math.exp(placed[-1]) * 1.3))
