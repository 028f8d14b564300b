"""Open each run's report.html in headless Chromium and check what a reader sees: the headline table and every
plot the report links, each shown (loaded from the page itself: no other file, no network). Takes a screenshot of
each page. Run by `nox -s browser` (not in the default sessions: it needs a browser, `apt-get install -y chromium`).

    python benchmarks/browser_check.py [RUN_DIR ...] [--screenshots DIR]
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
from pathlib import Path

RUNS = ("results/reference/default", "results/reference/shapes")
BROWSERS = ("chromium", "chromium-browser", "google-chrome", "chrome")


def browser() -> str:
    found = next((path for name in BROWSERS if (path := shutil.which(name))), None)
    if found is None:
        sys.exit("error: no Chromium found (apt-get install -y chromium)")
    return found


def headless(binary: str, *args: str) -> str:
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=10000", "--hide-scrollbars"]
    done = subprocess.run([binary, *flags, *args], capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        sys.exit(f"error: {binary} failed: {done.stderr.strip()[-500:]}")
    return done.stdout


def check(run_dir: Path, binary: str, screenshots: Path) -> list[str]:
    """What is wrong with the page of ``run_dir`` (nothing: an empty list); takes its screenshot."""
    page = (run_dir / "report.html").resolve()
    linked = re.findall(r"!\[[^\]]*\]\(([^)]+\.png)\)", (run_dir / "report.md").read_text(encoding="utf-8"))
    dom = headless(binary, "--dump-dom", page.as_uri())
    problems = []
    headline = re.search(r'<table id="headline">(.*?)</table>', dom, re.S)
    if headline is None or "slate_acc" not in headline.group(1) or headline.group(1).count("<tr>") < 2:
        problems.append("no headline table with slate_acc and its rows")
    images = re.findall(r'<img [^>]*src="data:image/png;base64,', dom)
    if len(images) != len(linked) or not linked:
        problems.append(f"{len(images)} embedded plots, the report links {len(linked)}")
    shown = re.search(r'id="plots-shown">(\d+) of (\d+) plots shown<', dom)
    if shown is None or shown.group(1) != shown.group(2) or int(shown.group(2)) != len(linked):
        problems.append(f"the browser did not show every plot ({shown.group(0) if shown else 'no count'})")
    shot = screenshots / f"{run_dir.name}.png"
    headless(binary, f"--screenshot={shot.resolve()}", "--window-size=1280,2400", page.as_uri())
    return problems


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="*", default=list(RUNS))
    parser.add_argument("--screenshots", type=Path, default=Path("results/browser"))
    args = parser.parse_args()
    args.screenshots.mkdir(parents=True, exist_ok=True)
    binary = browser()
    failed = False
    for run in map(Path, args.runs):
        problems = check(run, binary, args.screenshots)
        failed |= bool(problems)
        print(f"{run}: " + ("; ".join(problems) if problems else f"ok (screenshot {args.screenshots / run.name}.png)"))
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
