"""The README and docs/ agree with each other and with the code: a figure stated on several pages comes from one
source (the reference records), every test the Guarantees table names exists, every page the README points to
exists, and the README stays a front door."""

import re
import statistics
from pathlib import Path

from bench.records import latest_records

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
README_MAX_LINES = 150
GUARANTEE_ROWS = 26  # the faults the Guarantees table covers: a page may move, a row may not go


def _sentences(path: Path) -> list[str]:
    """The page's sentences, each on one line (a markdown paragraph's line breaks removed)."""
    text = re.sub(r"\s*\n\s*", " ", path.read_text(encoding="utf-8"))
    return re.split(r"(?<=[.:;])\s+(?=[A-Z`(])", text)


def test_the_process_baseline_is_the_reference_records_figure_on_every_page():
    records = latest_records(ROOT / "results" / "reference" / "default")
    baseline = round(statistics.median(r["measurements"]["cpu_rss_baseline_mib"] for r in records))
    stated = {}
    for page in PAGES:
        for sentence in _sentences(page):
            if re.search(r"baseline|interpreter", sentence):
                for number in re.findall(r"(\d+(?:\.\d+)?) MiB", sentence):
                    stated.setdefault(float(number), []).append(page.name)
    assert stated, "no page states the process baseline: the check would pass on nothing"
    assert set(stated) == {baseline}, f"the reference records say {baseline} MiB; the pages say {stated}"


def _named_tests(row: str) -> list[tuple[str | None, str]]:
    cell = row.rstrip().rstrip("|").rsplit("|", 1)[-1]
    named = []
    for name in re.findall(r"`([^`]+)`", cell):
        file, _, test = name.rpartition("::")
        named.append((file or None, test))
    return named


def test_every_test_the_guarantees_table_names_exists():
    rows = [line for line in (ROOT / "docs" / "guarantees.md").read_text().splitlines() if line.startswith("| ")]
    body = rows[1:]  # the header row; the separator starts with "|---"
    assert len(body) == GUARANTEE_ROWS
    sources = {path.name: path.read_text() for path in (ROOT / "tests").glob("test_*.py")}
    every = "\n".join(sources.values())
    for row in body:
        named = _named_tests(row)
        assert named, f"a guarantee without its test: {row[:80]}"
        for file, test in named:
            if test.endswith(".py"):
                assert test in sources, test
            elif file is not None:
                assert re.search(rf"def {re.escape(test)}\b", sources[file]), f"{file}::{test}"
            else:
                assert re.search(rf"def {re.escape(test)}\b", every), test


def test_the_readme_is_a_front_door_whose_pointers_exist():
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= README_MAX_LINES
    assert "bench run --models all" in lines[3] and "python -m pytest" in lines[4]  # the main job, the tests
    commands = {"run", "tune", "report", "compare", "list", "ab", "export"}
    table = [line for line in lines if line.startswith("| `bench ")]
    assert {line.split("`bench ")[1].split()[0].rstrip("`") for line in table} == commands
    for page in PAGES:
        for pointer in set(re.findall(r"docs/[\w-]+\.md", page.read_text())):
            assert (ROOT / pointer).is_file(), f"{page.name} points to {pointer}, which does not exist"
