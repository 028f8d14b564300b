"""report.html: the report as one self-contained page (the plots inside as data URIs, tables sortable by a click
on their header, no network), written beside report.md from the same markdown."""

from __future__ import annotations

import base64
import html
import re
from pathlib import Path

HTML_FILE = "report.html"
HEADLINE_ID = "headline"  # the id of the headline table (the first table of the report)

_STYLE = """
body { font: 15px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; max-width: 1100px; margin: 2em auto;
       padding: 0 1em; color: #1b1b1b; }
table { border-collapse: collapse; margin: 0.8em 0; font-size: 13px; font-variant-numeric: tabular-nums;
        display: block; overflow-x: auto; max-width: 100%; }  /* a wide table scrolls, the page does not */
td { white-space: nowrap; }
th, td { border: 1px solid #d0d0d0; padding: 3px 8px; }
th { background: #f3f3f3; cursor: pointer; user-select: none; position: sticky; top: 0; }
th[data-order="asc"]::after { content: " \\25B2"; } th[data-order="desc"]::after { content: " \\25BC"; }
tr:nth-child(even) td { background: #fafafa; }
img { max-width: 100%; border: 1px solid #e4e4e4; }
code { background: #f3f3f3; padding: 0 3px; border-radius: 3px; }
#plots-shown { color: #555; font-size: 13px; }
"""

# Sorting: numbers (29.3k, 1.2M, 0.851 ± 0.008, +0.110*) by value, anything else as text; a second click reverses.
_SCRIPT = """
const SCALE = {k: 1e3, M: 1e6, G: 1e9};
function cellValue(text) {
  const m = text.trim().replace(/,/g, '').match(/^[+-]?\\d*\\.?\\d+(e[+-]?\\d+)?([kMG])?/i);
  return m ? parseFloat(m[0]) * (SCALE[m[2]] || 1) : null;
}
function sortBy(th) {
  const table = th.closest('table'), body = table.tBodies[0], column = th.cellIndex;
  const order = th.dataset.order === 'asc' ? 'desc' : 'asc';
  table.querySelectorAll('th').forEach(h => delete h.dataset.order);
  th.dataset.order = order;
  const rows = Array.from(body.rows), sign = order === 'asc' ? 1 : -1;
  rows.sort((a, b) => {
    const x = a.cells[column].textContent, y = b.cells[column].textContent;
    const u = cellValue(x), v = cellValue(y);
    if (u !== null && v !== null) return sign * (u - v);
    if (u !== null) return -1; if (v !== null) return 1;
    return sign * x.localeCompare(y);
  });
  rows.forEach(r => body.appendChild(r));
}
document.querySelectorAll('th').forEach(th => th.addEventListener('click', () => sortBy(th)));
window.addEventListener('load', () => {
  const plots = Array.from(document.images), shown = plots.filter(i => i.complete && i.naturalWidth > 0);
  document.getElementById('plots-shown').textContent = `${shown.length} of ${plots.length} plots shown`;
});
"""


def _embedded(run_dir: Path, body: str) -> str:
    """Every image of the run directory that ``body`` links to, as a data URI: the page needs no other file."""

    def inline(match: re.Match) -> str:
        path = run_dir / html.unescape(match.group(1))
        if path.parent != run_dir or not path.is_file():
            return match.group(0)
        return f'src="data:image/png;base64,{base64.b64encode(path.read_bytes()).decode("ascii")}"'

    return re.sub(r'src="([^"/]+\.png)"', inline, body)


def render_html(markdown: str, title: str, run_dir: Path) -> str:
    """The page of ``markdown`` (report.md's text), its plots embedded from ``run_dir``."""
    from markdown_it import MarkdownIt

    body = MarkdownIt("commonmark", {"html": False}).enable("table").render(markdown)
    body = body.replace("<table>", f'<table id="{HEADLINE_ID}">', 1) if "## Overview" in markdown else body
    body = _embedded(run_dir, body)
    return (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">\n'
        f'<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{html.escape(title)}</title>\n<style>{_STYLE}</style></head>\n<body>\n"
        f'<p id="plots-shown"></p>\n{body}\n<script>{_SCRIPT}</script>\n</body></html>\n'
    )


def write_html(run_dir: Path, markdown: str, title: str) -> Path:
    path = run_dir / HTML_FILE
    path.write_text(render_html(markdown, title, run_dir), encoding="utf-8")
    return path
