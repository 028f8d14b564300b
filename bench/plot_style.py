"""How the plots look: one colour and marker per model (the same in every plot of a run), tick labels in real
values, and labels placed next to their points without overlapping each other."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

# 16 colours told apart in print and by most colour-blind readers (tab10, then darker tab20b/c shades), and 12
# markers: a model is told apart by both.
PALETTE = (
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf",
    "#bcbd22", "#393b79", "#637939", "#8c6d31", "#843c39", "#7b4173", "#3182bd", "#31a354",
)  # fmt: skip
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "<", ">", "p", "h", "*")
REFERENCE_COLOUR = "#555555"  # the reference lines of models that train nothing
CONTENDED_EDGE = "#d00000"  # the ring around a point measured under contention


@dataclass(frozen=True)
class Style:
    colour: str
    marker: str


def model_styles(models: list[str]) -> dict[str, Style]:
    """A distinct (colour, marker) per model: the registered models and ``models`` in name order, so that a model
    looks the same in every plot of an installation, plugins included. The first 16 differ in colour; beyond,
    each colour comes back with another marker."""
    from rerankers import model_names

    names = sorted(set(model_names()) | set(models))
    styles = {}
    for i, name in enumerate(names):
        turn = i // len(PALETTE)
        styles[name] = Style(PALETTE[i % len(PALETTE)], MARKERS[(i + turn) % len(MARKERS)])
    return {name: styles[name] for name in models}


def tick_text(value: float) -> str:
    """A tick label as a reader writes the value: 64, 0.85, 29.3k, 1.2M (never 2^6 or 1.07x10^2)."""
    if value == 0 or not math.isfinite(value):
        return "0" if value == 0 else ""
    if float(value).is_integer() and abs(value) < 10_000:
        return str(int(value))  # a batch size of 1024, not 1.02k
    if abs(value) >= 1000:
        scale, suffix = next((s, x) for s, x in ((1e9, "G"), (1e6, "M"), (1e3, "k")) if abs(value) >= s)
        return f"{value / scale:.3g}{suffix}"
    return f"{value:.3g}"


def real_ticks(axis: Any, log: bool, values: list[float] | None = None) -> None:
    """Tick labels of ``axis`` in real values; on a log axis no minor labels; ``values``: ticks at exactly these
    (a swept axis's own values, such as the batch sizes)."""
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullFormatter

    if values is not None:
        axis.set_major_locator(FixedLocator(sorted(set(values))))
    axis.set_major_formatter(FuncFormatter(lambda v, _: tick_text(v)))
    if log:
        axis.set_minor_formatter(NullFormatter())


def wants_log(values: list[float]) -> bool:
    """A log scale only where the values span more than a factor of 10 (and are all positive)."""
    finite = [v for v in values if math.isfinite(v)]
    return bool(finite) and min(finite) > 0 and max(finite) / min(finite) > 10


def place_labels(ax: Any, labels: list[tuple[float, float, str, str]], fontsize: float = 8) -> None:
    """Each (x, y, text, colour) written next to its point, to the right (to the left near the right edge), moved
    up or down in small steps until it overlaps no label placed before it."""
    fig = ax.figure
    texts = [
        ax.annotate(text, (x, y), xytext=(6, 2), textcoords="offset points", fontsize=fontsize, color=colour,
                    va="bottom", ha="left")
        for x, y, text, colour in labels
    ]  # fmt: skip
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    edge = ax.get_window_extent(renderer).x1
    placed = [_marker_box(ax, x, y) for x, y, _, _ in labels]  # a label covers no point
    for text in sorted(texts, key=lambda t: -t.get_window_extent(renderer).y0):
        box = text.get_window_extent(renderer)
        if box.x1 > edge:
            text.set_ha("right")
            text.set_position((-6, 2))
            box = text.get_window_extent(renderer)
        shift = next((s for s in _shifts(box.height) if not any(box.translated(0, s).overlaps(p) for p in placed)), 0.0)
        x_offset, y_offset = text.get_position()
        text.set_position((x_offset, y_offset + shift * 72 / fig.dpi))
        placed.append(box.translated(0, shift))


def _shifts(height: float) -> list[float]:
    """Vertical moves to try, in pixels: none, then up and down in steps of a third of a label's height."""
    step = max(height / 3, 1.0)
    return [0.0] + [sign * step * k for k in range(1, 40) for sign in (-1, 1)]


def _marker_box(ax: Any, x: float, y: float, radius: float = 6.0) -> Any:
    """The display-space square a point's marker takes."""
    from matplotlib.transforms import Bbox

    px, py = ax.transData.transform((x, y))
    return Bbox.from_extents(px - radius, py - radius, px + radius, py + radius)
