"""Calibration of `bench ab`: an A/A must find nothing, a known slowdown must be found.

    python benchmarks/ab_calibration.py --out results/reference     # the calibration (quiet machine; see ab.md)
    python benchmarks/ab_calibration.py --aa-runs 2 --slow-runs 0 --pairs 3 --no-default --no-instructions \\
        --out /tmp/ab-calibration                                     # a quick check of the script itself

Every A/B is `bench ab --models mlp,test-slowable` (the test plugin model test-slowable, tests/speed_models.py):

- smoke size (SMOKE_SIZE): --aa-runs A/As (both sides the same code) and --slow-runs A/Bs whose side B has
  test-slowable ~20% slower (``--b-env SLOWABLE_SLOW=1``: one of its five blocks runs twice, 17% more FLOPs; its
  cell key is unchanged, as after a code change), 10 pairs each;
- default size (the default profile): one A/A and one slowed A/B, reported with every value's pairs, per-pair
  CV and the smallest change the pairs could detect;
- with --instructions (on where valgrind is installed), the first smoke A/A and slowed A/B also count
  instructions under callgrind: the A/A spread of that count, and whether it sees the slowdown.

Writes OUT/ab.md, with the issue's criteria checked (smoke: at most 1 REGRESSION over all A/As; a REGRESSION of
test-slowable's training or inference speed in at least 8 of the slowed A/Bs, and no verdict of change on the
MLP in them), and keeps each A/B's directory (records, ab.md, plot) under OUT/ab/.
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from bench.ab_report import VERDICT_HEADERS, AbResult, instruction_rows, markdown_table, read_result, verdict_rows
from bench.ab_verdict import IMPROVEMENT, REGRESSION, SAME
from bench.records import cpu_name, git_revision

TESTS = Path(__file__).resolve().parents[1] / "tests"  # the slowable test plugin lives there
MODELS = "mlp,test-slowable"
# The smoke profile's data and epochs, with the width and batch the earlier slowed-model check used: at width 16
# and batch 64 a step is mostly per-operation overhead, which the extra block adds to less than to the FLOPs.
SMOKE_SIZE = ["--profile", "smoke", "--batch-size", "256", "--d-model", "64", "--min-block-seconds", "0.05"]
DEFAULT_SIZE = ["--profile", "default"]
SLOW = ["--b-env", "SLOWABLE_SLOW=1"]
CHANGE = (REGRESSION, IMPROVEMENT)


@dataclass
class Run:
    name: str
    kind: str  # "A/A" or "slowed"
    size: str  # "smoke" or "default"
    command: list[str]
    seconds: float
    result: AbResult


def plugin_environment() -> dict[str, str]:
    """test-slowable known in bench ab's processes (they inherit the driver's environment)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(TESTS), env.get("PYTHONPATH")]))
    env["RERANK_BENCH_PLUGINS"] = "speed_models"
    env.pop("SLOWABLE_SLOW", None)
    return env


def run_ab(name: str, kind: str, size: str, args: list[str], out: Path) -> Run:
    """One `bench ab` into OUT/ab/NAME (resumed if it is there). Exit 1 is a REGRESSION verdict, expected of
    the slowed A/Bs; anything else but 0 stops the calibration."""
    command = [
        sys.executable,
        "-m",
        "bench",
        "ab",
        "--models",
        MODELS,
        *args,
        "--out",
        str(out / "ab"),
        "--run-id",
        name,
    ]
    print(f"{name}: {shlex.join(command[2:])}", flush=True)
    start = time.monotonic()
    done = subprocess.run(command, env=plugin_environment())
    if done.returncode not in (0, 1):
        raise SystemExit(f"error: {name} failed with exit code {done.returncode} (its records are kept; re-run)")
    return Run(name, kind, size, command[2:], time.monotonic() - start, read_result(out / "ab" / name))


def verdicts(run: Run, model: str) -> dict[str, str]:
    return {j.name: j.verdict for j in run.result.judgements if run.result.label(j.cell) == model}


def smoke_section(aa: list[Run], slowed: list[Run], pairs: int) -> list[str]:
    lines = [f"## Smoke size: {len(aa)} A/As and {len(slowed)} slowed A/Bs", ""]
    lines += [
        f"`bench ab --models {MODELS} {shlex.join(SMOKE_SIZE)}` ({pairs} pairs), side B of the slowed A/Bs "
        f"with `{shlex.join(SLOW)}`.",
        "",
    ]
    rows = []
    for run in aa + slowed:
        for model in ("mlp", "test-slowable"):
            v = verdicts(run, model)
            shown = [v.get(n, "–") for n in ("train_samples_per_s", "infer_samples_per_s", "latency_b1_p50_ms")]
            contended = max(j.contended for j in run.result.judgements)
            rows.append([run.name, run.kind, model, *shown, str(contended), f"{run.seconds / 60:.1f}"])
    headers = ["A/B", "kind", "model", "train", "inference", "latency p50", "contended pairs", "minutes"]
    lines += markdown_table(headers, rows) + [""]
    aa_calls = sum(j.verdict == REGRESSION for run in aa for j in run.result.judgements)
    found = sum(
        any(verdicts(run, "test-slowable").get(n) == REGRESSION for n in ("train_samples_per_s", "infer_samples_per_s"))
        for run in slowed
    )
    mlp_calls = sum(v in CHANGE for run in slowed for v in verdicts(run, "mlp").values())
    lines += [
        "Criteria:",
        "",
        f"- A/A: {aa_calls} REGRESSION verdict(s) in {len(aa)} A/As of {6 * len(aa)} values (at most 1): "
        + ("met" if aa_calls <= 1 else "**not met**"),
        f"- slowed: test-slowable's training or inference speed a REGRESSION in {found} of {len(slowed)} "
        f"(at least 8 of 10): " + ("met" if found >= 0.8 * len(slowed) else "**not met**"),
        f"- slowed: {mlp_calls} verdict(s) of change on the unchanged MLP (none): "
        + ("met" if mlp_calls == 0 else "**not met**"),
        f"- A/A SAME verdicts: {sum(j.verdict == SAME for run in aa for j in run.result.judgements)} of "
        f"{6 * len(aa)} values (the rest INCONCLUSIVE or a call).",
        "",
    ]
    return lines


def detail_section(run: Run) -> list[str]:
    """One A/B in full: each value's pairs, per-pair CV, change, interval, detectable change; instructions."""
    lines = [
        f"### {run.name}: {run.kind}, {run.size} size ({run.seconds / 60:.1f} min)",
        "",
        f"`{shlex.join(run.command)}`",
        "",
    ]
    lines += markdown_table(VERDICT_HEADERS, verdict_rows(run.result)) + [""]
    instructions = instruction_rows(run.result)
    if instructions:
        headers = ["cell", "count", "A runs", "B runs", "change", "spread", "verdict"]
        lines += ["Instructions (callgrind):", "", *markdown_table(headers, instructions), ""]
    return lines


def render(args: argparse.Namespace, runs: list[Run], started: float) -> str:
    aa = [r for r in runs if r.kind == "A/A" and r.size == "smoke"]
    slowed = [r for r in runs if r.kind == "slowed" and r.size == "smoke"]
    lines = [
        "# bench ab calibration: an A/A finds nothing, a known slowdown is found",
        "",
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {cpu_name()}, {os.cpu_count()} cores, git "
        f"{git_revision() or 'unknown'}; {(time.monotonic() - started) / 60:.0f} min in all.",
        f"Command: `{shlex.join(['python', *sys.argv])}`",
        "",
        "Each A/B: pairs of fresh processes (one per side, back to back, order from a seeded coin) doing fixed "
        "work; per value the pairs' log ratios B/A, Wilcoxon's exact signed-rank test, the Hodges-Lehmann change "
        "with its 95% interval, Holm across the 6 values (docs/speed-verdicts.md). Threshold 10%.",
        "",
    ]
    if aa or slowed:
        lines += smoke_section(aa, slowed, args.pairs)
    details = [r for r in runs if r.size == "default" or r.result.state.of("instructions")]
    if details:
        lines += ["## In full", ""]
        for run in details:
            lines += detail_section(run)
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--aa-runs", type=int, default=10)
    parser.add_argument("--slow-runs", type=int, default=10)
    parser.add_argument("--pairs", type=int, default=10)
    both = argparse.BooleanOptionalAction
    parser.add_argument("--default", action=both, default=True, help="one A/A and one slowed A/B at the default size")
    parser.add_argument(
        "--instructions",
        action=both,
        default=shutil.which("valgrind") is not None,
        help="count instructions in the first smoke A/A and slowed A/B [where valgrind is installed]",
    )
    parser.add_argument("--out", type=Path, default=Path("results/reference"))
    args = parser.parse_args(argv)
    started = time.monotonic()
    pairs = ["--pairs", str(args.pairs)]
    plan = [(f"smoke-aa-{i}", "A/A", "smoke", SMOKE_SIZE) for i in range(1, args.aa_runs + 1)]
    plan += [(f"smoke-slow-{i}", "slowed", "smoke", SMOKE_SIZE + SLOW) for i in range(1, args.slow_runs + 1)]
    if args.default:
        plan += [
            ("default-aa", "A/A", "default", DEFAULT_SIZE),
            ("default-slow", "slowed", "default", DEFAULT_SIZE + SLOW),
        ]
    runs = []
    for name, kind, size, extra in plan:
        counted = args.instructions and name in ("smoke-aa-1", "smoke-slow-1")
        runs.append(run_ab(name, kind, size, extra + pairs + (["--instructions"] if counted else []), args.out))
    text = render(args, runs, started)
    (args.out / "ab.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
