"""The report's headline is read on GitHub: it must fit the page without horizontal scrolling."""

from __future__ import annotations

from pathlib import Path

import matplotlib
import pytest
from PIL import ImageFont

from bench.records import latest_records
from bench.report import render
from bench.tables import compact_value

REFERENCE = Path(__file__).resolve().parents[1] / "results" / "reference" / "default" / "records.jsonl"
# GitHub sets markdown at 16 px with 13 px of padding either side of a table cell; a table wider than the page
# wraps its cells at spaces (a value "29,275 ± 2,405" breaks over lines) and scrolls when that is not enough.
# The headline should need neither: its cells unwrapped must fit the narrowest column GitHub shows a report
# in, a repository page's README, about 880 px. We measure with DejaVu Sans (matplotlib bundles it), whose
# digits are ~10% wider than those of the fonts GitHub asks for (Segoe UI, Helvetica, Arial, Noto Sans):
# 960 px measured is about 870 px on GitHub.
FONT_PX, CELL_PADDING_PX, PAGE_PX = 16, 2 * 13, 960


def _font(name: str) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(str(Path(matplotlib.get_data_path()) / "fonts" / "ttf" / name), FONT_PX)


def table_width_px(table: list[str]) -> float:
    """The width of a markdown table whose cells do not wrap: the widest cell of each column, plus padding."""
    regular, bold = _font("DejaVuSans.ttf"), _font("DejaVuSans-Bold.ttf")
    rows = [[cell.strip() for cell in line.strip().strip("|").split("|")] for line in table]
    header, body = rows[0], rows[2:]
    return sum(
        max([bold.getlength(name)] + [regular.getlength(row[j].strip("_")) for row in body]) + CELL_PADDING_PX
        for j, name in enumerate(header)
    )


def first_table(markdown: str) -> list[str]:
    lines = markdown.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("|"))
    end = next((i for i in range(start, len(lines)) if not lines[i].startswith("|")), len(lines))
    return lines[start:end]


@pytest.mark.skipif(not REFERENCE.exists(), reason="the committed default reference run is not in this checkout")
def test_the_reference_headline_fits_a_github_page():
    headline = first_table(render(latest_records(REFERENCE.parent), "default", "mlp", []))
    assert len(headline[0].strip("|").split("|")) <= 9
    assert len(headline) == 2 + 12  # every model of the run
    assert table_width_px(headline) <= PAGE_PX


def test_the_width_estimate_grows_with_the_cells():
    narrow = ["| a | b |", "|---|---|", "| 1 | 2 |"]
    wide = ["| a | b |", "|---|---|", "| 1 | 29,275 ± 2,405 |"]
    assert table_width_px(wide) > table_width_px(narrow) + 80


def test_compact_values_keep_three_significant_digits():
    assert [compact_value(v) for v in (29275, 8001, 101313, 6525000, 2.5e9)] == [
        "29.3k",
        "8.00k",
        "101k",
        "6.53M",
        "2.50G",
    ]
    assert [compact_value(v) for v in (0, 181, 68.6, 0.0432, 1.3)] == ["0", "181", "68.6", "0.0432", "1.30"]
    assert compact_value(float("nan")) == "–"


@pytest.mark.skipif(not REFERENCE.exists(), reason="the committed default reference run is not in this checkout")
def test_the_headline_legend_names_each_short_header():
    report = render(latest_records(REFERENCE.parent), "default", "mlp", [])
    for short, full in (("train (/s)", "train (samples/s)"), ("p50 (ms)", "latency b1 p50 (ms)")):
        assert f"{short}: {full}" in report
    headline, overview = report.split("### Every headline value")[:2]
    # the full values stay below the headline: deepsets' training throughput, compact above, in full below
    deepsets = next(r for r in latest_records(REFERENCE.parent) if r["model"] == "deepsets" and r["status"] == "ok")
    full = deepsets["timings"]["train_samples_per_s"]["median"]
    assert f"{compact_value(full)}" in headline and f"{full:,.0f} ± " in overview and "18,881" in overview
