"""`nox -s mutants`: mutation testing of the modules every verdict rests on, and the score of each.

Runs mutmut (its configuration: pyproject.toml, [tool.mutmut]: the modules and the unit-sized tests that cover them)
with one worker by default, reads each module's results from mutants/<module>.meta, leaves out the equivalent
mutants that docs/mutants.md lists (each with the reason it cannot be told from the original), prints the score of
each module and exits 1 when one is below 90%, when a mutant was left unchecked, or when docs/mutants.md lists a
mutant that no longer exists.

python benchmarks/mutation_score.py [--max-children N] [--fresh]    # --fresh: forget earlier results (mutants/)
python benchmarks/mutation_score.py --score-only                     # the scores of the last run, without running

mutmut keeps its results in mutants/ and re-tests only the functions that changed since, so a second run after a
fix takes seconds; --fresh starts over.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import time
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EQUIVALENTS = ROOT / "docs" / "mutants.md"
TARGET = 0.90  # the least mutation score of each module (equivalent mutants left out)
# mutmut's exit codes of a mutant's test run (mutmut/__main__.py, status_by_exit_code)
DETECTED = {1: "killed", 3: "killed", -24: "timeout", 24: "timeout", 36: "timeout", 152: "timeout", 255: "timeout"}
DETECTED |= {-11: "crashed", -9: "crashed"}
SURVIVED = {0: "survived", 33: "no tests", 5: "no tests", 34: "skipped", 35: "suspicious", None: "not checked"}


def modules() -> list[str]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["mutmut"]
    return list(config["only_mutate"])


def listed_equivalents() -> set[str]:
    """The mutant names docs/mutants.md lists as equivalent (written `bench.module.x_function__mutmut_N`)."""
    if not EQUIVALENTS.exists():
        return set()
    return set(re.findall(r"`(bench\.[\w.]+__mutmut_\d+)`", EQUIVALENTS.read_text()))


def results(module: str) -> dict[str, int | None]:
    """Each mutant of ``module`` and the exit code of its test run (None: not checked)."""
    meta = ROOT / "mutants" / f"{module}.meta"
    if not meta.exists():
        return {}
    return json.loads(meta.read_text())["exit_code_by_key"]


def status(code: int | None) -> str:
    return DETECTED.get(code) or SURVIVED.get(code) or f"exit {code}"


def score_table(equivalents: set[str]) -> tuple[list[str], list[str]]:
    """The markdown table of the scores, and the problems that fail the session."""
    lines = [
        "| module | mutants | equivalent | killed | survived | score |",
        "|---|---|---|---|---|---|",
    ]
    problems, known = [], set()
    for module in modules():
        codes = results(module)
        known |= set(codes)
        judged = {name: code for name, code in codes.items() if name not in equivalents}
        killed = sum(code in DETECTED for code in judged.values())
        left = sorted(name for name, code in judged.items() if code not in DETECTED)
        score = killed / len(judged) if judged else float("nan")
        lines.append(f"| {module} | {len(codes)} | {len(codes) - len(judged)} | {killed} | {len(left)} | {score:.1%} |")
        if not codes:
            problems.append(f"{module}: no results (did mutmut run?)")
        elif not score >= TARGET:
            problems.append(
                f"{module}: score {score:.1%} < {TARGET:.0%}; left: "
                + ", ".join(f"{name} ({status(codes[name])})" for name in left)
            )
    stale = sorted(equivalents - known)
    if stale:
        problems.append(f"{EQUIVALENTS.name} lists mutants that no longer exist: {', '.join(stale)}")
    return lines, problems


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-children", type=int, default=1, help="mutants tested at once (default 1)")
    parser.add_argument("--fresh", action="store_true", help="forget earlier results (remove mutants/) first")
    parser.add_argument("--score-only", action="store_true", help="only read the results of the last run")
    args = parser.parse_args()
    started = time.monotonic()
    if not args.score_only:
        if args.fresh:
            shutil.rmtree(ROOT / "mutants", ignore_errors=True)
        command = [sys.executable, "-m", "mutmut", "run", "--max-children", str(args.max_children)]
        done = subprocess.run(command, cwd=ROOT)
        if done.returncode != 0:
            print(f"error: mutmut run exited {done.returncode}", file=sys.stderr)
            return 1
    lines, problems = score_table(listed_equivalents())
    print("\n".join(lines))
    if not args.score_only:
        print(f"\nmutmut run --max-children {args.max_children}: {time.monotonic() - started:.0f} s")
    for problem in problems:
        print(f"error: {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
