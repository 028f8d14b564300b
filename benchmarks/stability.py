"""Run-to-run stability of the speed figures: the same cells N times back to back, and a bare matmul loop
as the noise floor of the machine in the same run.

    python benchmarks/stability.py                      # default profile, transformer + mlp, 5 runs
    python benchmarks/stability.py --profile smoke --runs 2 --out /tmp/stability   # a quick check

Writes <out>/stability.md and each run's records under <out>/stability/. For every model and speed
measurement (training throughput, inference throughput, batch-1 latency p50) the table gives the
coefficient of variation of the per-run medians across runs, next to the targets (3%, 3%, 5%) and the
matmul loop's CV: a harness cannot be steadier than the machine it runs on. Cells flagged contended are
counted; their runs say the machine was not quiet.

Then two checks of ``bench compare`` on real runs: an A/A pair (two back-to-back runs of --aa-models, all
by default: no regression expected) and a slowed pair (mlp and the test plugin model test-slowable, then
the same with test-slowable doing ~20% more work, as a code change would: only it should regress).
``--rejudge`` runs nothing: it judges the kept pairs again with the current ``bench compare`` and rewrites only
that section of stability.md.
"""

from __future__ import annotations

import argparse
import importlib
import os
import shlex
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch

from bench.compare import THRESHOLD, Comparison, compare_runs
from bench.config import RunConfig
from bench.records import RECORDS_FILE, cpu_name, git_revision, load_records
from bench.runner import run_cells
from bench.stats import SIGNIFICANCE, timing_summary
from bench.sweep import build_cells

# (record field, what it measures, CV target)
MEASUREMENTS = (
    ("train_samples_per_s", "training throughput (samples/s)", 0.03),
    ("infer_samples_per_s", "inference throughput (samples/s)", 0.03),
    ("latency_b1_p50_ms", "latency at batch 1, p50 (ms)", 0.05),
)
FLOOR_SIZE = 256  # the noise floor multiplies two FLOOR_SIZE x FLOOR_SIZE fp32 matrices
FLOOR_BLOCKS = 7
TESTS = Path(__file__).resolve().parents[1] / "tests"  # the slowable test plugin lives there
COMPARE_HEADING = "## bench compare on real runs"


def matmul_floor(seconds: float, threads: int) -> dict[str, Any]:
    """GFLOP/s of a bare matmul loop in timed blocks (same thread count as the cells): the machine's own
    run-to-run noise, with no harness in between."""
    torch.set_num_threads(threads)
    a, b = torch.randn(FLOOR_SIZE, FLOOR_SIZE), torch.randn(FLOOR_SIZE, FLOOR_SIZE)
    flops = 2 * FLOOR_SIZE**3
    iterations = 1
    while True:  # calibrate a block to seconds / FLOOR_BLOCKS (also the warm-up)
        start = time.perf_counter()
        for _ in range(iterations):
            torch.mm(a, b)
        if time.perf_counter() - start >= seconds / FLOOR_BLOCKS or iterations >= 1 << 20:
            break
        iterations *= 2
    rates = []
    for _ in range(FLOOR_BLOCKS):
        start = time.perf_counter()
        for _ in range(iterations):
            torch.mm(a, b)
        rates.append(flops * iterations / (time.perf_counter() - start) / 1e9)
    return timing_summary(rates)


def coefficient_of_variation(values: list[float]) -> float | None:
    if len(values) < 2 or statistics.mean(values) == 0:
        return None
    return statistics.stdev(values) / statistics.mean(values)


def percent(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}%"


def comparison_lines(title: str, comparison: Comparison, expected: str) -> list[str]:
    regressions = [c for c in comparison.changes if c.regression]
    timed = [c for c in comparison.changes if c.kind in ("speed", "latency")]
    lines = [
        f"### {title}",
        "",
        f"Expected: {expected}. `bench compare` at threshold {THRESHOLD:.0%}: {comparison.compared_cells} cells "
        f"compared, {len(timed)} speed/latency values, **{comparison.regressions} regression(s)**; "
        f"{sum(c.flagged for c in timed)} speed/latency values moved beyond the threshold, of which "
        f"{sum(1 for c in timed if c.flagged and c.p is not None and c.p >= SIGNIFICANCE)} not significant, "
        f"{sum(1 for c in timed if c.worse and not c.resolved)} worse but too noisy to call, "
        f"{len({c.key for c in timed if c.contended})} cells contended.",
        "",
    ]
    if regressions or comparison.status_changes:
        lines += ["| cell | value | before | after | change | p |", "|---|---|---|---|---|---|"]
        for c in regressions:
            lines.append(f"| {c.cell} | {c.name} | {c.before:.4g} | {c.after:.4g} | {c.relative:+.1%} | {c.p:.2g} |")
        lines += [f"- status: {line}" for line in comparison.status_changes]
        lines.append("")
    return lines


def write_markdown(
    path: Path,
    args: argparse.Namespace,
    per_run: list[dict[str, Any]],
    floor: list[dict],
    checks: list[tuple[str, Comparison, str]],
) -> str:
    models = list(per_run[0]["records"])
    lines = [
        "# Speed stability: the same cells run back to back",
        "",
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {cpu_name()}, torch {torch.__version__}; "
        f"profile `{args.profile}`, {args.runs} runs, models {', '.join(models)}.",
        f"Command: `{shlex.join(['python', *sys.argv])}`",
        "",
        "CV: standard deviation / mean of the per-run medians across runs. Interval: the median over runs of "
        "each run's 95% interval of the median (half-width, % of the median; n/a below 6 samples).",
        "",
        "| model | measurement | runs | mean of run medians | CV | target | interval ± | contended runs |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for model in models:
        records = [run["records"][model] for run in per_run]
        ok = [r for r in records if r["status"] == "ok"]
        contended = sum(1 for r in ok if (r.get("conditions") or {}).get("contended"))
        for field, label, target in MEASUREMENTS:
            values = [r["measurements"][field] for r in ok if r["measurements"].get(field) is not None]
            if not values:
                continue
            timing_name = "latency_b1_ms" if field.startswith("latency") else field
            widths = []
            for r in ok:
                s = r.get("timings", {}).get(timing_name, {})
                if s.get("ci_low") is not None and s.get("median"):
                    widths.append(max(s["median"] - s["ci_low"], s["ci_high"] - s["median"]) / s["median"])
            cv = coefficient_of_variation(values)
            verdict = "" if cv is None else (" ✓" if cv <= target else " ✗")
            lines.append(
                f"| {model} | {label} | {len(values)} | {statistics.mean(values):.4g} | {percent(cv)}{verdict} | "
                f"{percent(target)} | {percent(statistics.median(widths) if widths else None)} | "
                f"{contended}/{len(ok)} |"
            )
    floor_medians = [f["median"] for f in floor]
    lines += [
        "",
        f"Noise floor: a bare {FLOOR_SIZE}x{FLOOR_SIZE} fp32 matmul loop timed the same way in each run "
        f"(GFLOP/s, median of {FLOOR_BLOCKS} blocks): mean {statistics.mean(floor_medians):.4g}, "
        f"run-to-run CV {percent(coefficient_of_variation(floor_medians))}.",
        "",
        "Per run (training throughput of each model, then the floor):",
        "",
        "| run | " + " | ".join(models) + " | floor GFLOP/s |",
        "|---|" + "---|" * (len(models) + 1),
    ]
    for index, (run, floor_run) in enumerate(zip(per_run, floor, strict=True), start=1):
        cells = []
        for model in models:
            r = run["records"][model]
            value = r["measurements"].get("train_samples_per_s")
            flag = " (contended)" if (r.get("conditions") or {}).get("contended") else ""
            cells.append(f"{value:.4g}{flag}" if value is not None else r["status"])
        lines.append(f"| {index} | " + " | ".join(cells) + f" | {floor_run['median']:.4g} |")
    text = "\n".join(lines) + "\n"
    if checks:
        text += "\n" + compare_section(checks)
    path.write_text(text)
    return text


def compare_section(checks: list[tuple[str, Comparison, str]], note: str = "") -> str:
    lines = [COMPARE_HEADING, "", *([note, ""] if note else [])]
    for title, comparison, expected in checks:
        lines += comparison_lines(title, comparison, expected)
    return "\n".join(lines) + "\n"


def judge_pairs(base: Path, aa_models: str) -> list[tuple[str, Comparison, str]]:
    """``bench compare``'s verdicts on the A/A pair and the slowed pair kept under ``base``."""
    return [
        (
            f"A/A: two runs of `--models {aa_models}`",
            compare_runs(base / "aa-1", base / "aa-2", THRESHOLD),
            "no regression",
        ),
        (
            "test-slowable made ~20% slower",
            compare_runs(base / "slow-before", base / "slow-after", THRESHOLD),
            "test-slowable's speeds regress, mlp's do not",
        ),
    ]


def rejudge(path: Path, aa_models: str) -> str:
    """Re-judge the kept pairs with the current ``bench compare`` and rewrite only that section of
    ``path``: the runs, their records and the CV table stay what they were."""
    text = path.read_text()
    if COMPARE_HEADING not in text:
        raise SystemExit(f"error: {path} has no '{COMPARE_HEADING}' section to rewrite")
    note = (
        f"Judged {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, git {git_revision() or 'unknown'}, by the current "
        "`bench compare` from the runs kept under stability/ (`python benchmarks/stability.py --rejudge`); "
        "the runs are those above."
    )
    text = text.split(COMPARE_HEADING)[0] + compare_section(judge_pairs(path.parent / "stability", aa_models), note)
    path.write_text(text)
    return text


def run_pair(profile: str, models: str, before: Path, after: Path, executor: str, slow_after: bool = False) -> None:
    """Two back-to-back runs of the same cells; the second with test-slowable slowed when ``slow_after``
    (its cell keys unchanged, as after a code change)."""
    cells = build_cells({"profile": profile, "models": models, "device": "cpu"})
    run_cells(cells, before, RunConfig(executor=executor, force=True))
    previous = os.environ.get("SLOWABLE_SLOW")
    os.environ["SLOWABLE_SLOW"] = "1" if slow_after else "0"
    try:
        run_cells(cells, after, RunConfig(executor=executor, force=True))
    finally:
        if previous is None:
            del os.environ["SLOWABLE_SLOW"]
        else:
            os.environ["SLOWABLE_SLOW"] = previous


def use_test_plugin() -> None:
    """Make the test plugin model test-slowable known here and in every cell process."""
    from rerankers import registry

    sys.path.insert(0, str(TESTS))
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(TESTS), os.environ.get("PYTHONPATH")]))
    os.environ[registry.PLUGINS_ENV] = "speed_models"  # the cell processes load it from the environment
    importlib.import_module("speed_models")  # registers test-slowable here


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="default")
    parser.add_argument("--models", default="transformer,mlp")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--threads", type=int, default=0, help="torch threads per cell (0: torch's default)")
    parser.add_argument("--executor", default="process", help="inline | process (each cell in a fresh process)")
    parser.add_argument("--floor-seconds", type=float, default=None, help="[3, or 0.3 for the smoke profile]")
    parser.add_argument("--aa-models", default="all", help="models of the A/A pair of runs ('' to skip the pairs)")
    parser.add_argument("--out", type=Path, default=Path("results/reference"))
    parser.add_argument(
        "--rejudge",
        action="store_true",
        help="run nothing: re-judge the pairs kept under OUT/stability with the current bench compare and "
        "rewrite only that section of OUT/stability.md",
    )
    args = parser.parse_args(argv)
    if args.rejudge:
        print(rejudge(args.out / "stability.md", args.aa_models))
        return
    if args.runs < 2:
        parser.error("--runs must be at least 2 (a CV needs two runs)")
    cells = build_cells({"profile": args.profile, "models": args.models, "device": "cpu", "threads": args.threads})
    floor_seconds = args.floor_seconds or (0.3 if args.profile == "smoke" else 3.0)
    threads = args.threads or torch.get_num_threads()
    per_run, floor = [], []
    for index in range(1, args.runs + 1):
        floor.append(matmul_floor(floor_seconds, threads))
        run_dir = args.out / "stability" / f"run-{index}"
        run_cells(cells, run_dir, RunConfig(executor=args.executor, force=True))
        latest = {}
        for record in load_records(run_dir / RECORDS_FILE):
            latest[record["model"]] = record  # force appends: the last record per model is this run's
        per_run.append({"records": latest})
        print(f"run {index}/{args.runs}: " + ", ".join(f"{m} {r['status']}" for m, r in latest.items()), flush=True)
    checks = []
    if args.aa_models:
        base = args.out / "stability"
        run_pair(args.profile, args.aa_models, base / "aa-1", base / "aa-2", args.executor)
        use_test_plugin()
        run_pair(args.profile, "mlp,test-slowable", base / "slow-before", base / "slow-after", args.executor, True)
        checks = judge_pairs(base, args.aa_models)
    print(write_markdown(args.out / "stability.md", args, per_run, floor, checks))


if __name__ == "__main__":
    main()
