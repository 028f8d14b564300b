"""``bench compare``: per-cell changes between two runs, tested; exit 1 on a regression."""

from __future__ import annotations

import math
from pathlib import Path

import typer

from bench.commands import command
from bench.commands.common import fail
from bench.compare import SPEED_CAVEAT, THRESHOLD, TIMED_KINDS, Change, Comparison, compare_runs
from bench.config import ConfigError
from bench.records import RECORDS_FILE
from bench.stats import SIGNIFICANCE

ALIGN = ("left", "left", "right", "right", "right", "left", "left")  # the columns of the table of changes
CELL_LEGEND = (
    "cell: model, s seed, b batch size, T slate length, S candidates, U user dim, F item dim, loss [key]\n"
    "MWU: Mann-Whitney U on the quantile of each stretch of samples (training epochs, serving bursts)"
)


@command("compare", order=50)
def compare(
    run_a: Path = typer.Argument(..., help="The reference run directory."),
    run_b: Path = typer.Argument(..., help="The run to check against it."),
    threshold: float = typer.Option(THRESHOLD, help="Relative change that is flagged (0.05 = 5%)."),
    include_contended: bool = typer.Option(
        False, "--include-contended", help="Also call regressions the speeds of cells measured under contention."
    ),
    show_all: bool = typer.Option(False, "--all", help="Print every compared value, not only flagged ones."),
    strict: bool = typer.Option(
        False, "--strict", help="Refuse (exit 2) to compare runs whose device, torch version or precision differ."
    ),
) -> None:
    """Per-cell changes of every metric; exits 1 on a regression (worse beyond the threshold and significant:
    speeds by Mann-Whitney U on the medians (or p95s, p99s) of the stretches of time their samples were taken
    in, Holm-corrected across the speed values; slate_acc by McNemar or two-proportion; slate_value and the slate
    regrets by a paired t-test on their per-slate values), and when nothing was compared or cells of the
    reference are missing from the run checked. One run per side cannot separate a speed change from drift
    between runs: `bench ab` gives speed verdicts."""
    for run_dir in (run_a, run_b):
        if not (run_dir / RECORDS_FILE).is_file():
            fail(f"{run_dir} has no {RECORDS_FILE}")
    if not (math.isfinite(threshold) and threshold >= 0):
        fail(f"threshold must be a finite number >= 0, got {threshold}")
    try:
        result = compare_runs(run_a, run_b, threshold, include_contended)
    except ConfigError as error:
        fail(str(error))
    if result.environment_differences:
        differ = f"the runs differ in {'; '.join(result.environment_differences)}"
        if strict:
            fail(f"{differ}; --strict refuses to compare them")
        typer.echo(f"warning: {differ}: their speeds (and accuracies) come from different conditions", err=True)
    if run_a.resolve() == run_b.resolve():
        typer.echo(f"warning: A and B are the same run ({run_a}): every value is compared with itself", err=True)
    print_changes(result, run_a, run_b, threshold, show_all)
    code = exit_code(result, run_a, run_b)
    if code:
        raise typer.Exit(code)


def print_changes(result: Comparison, run_a: Path, run_b: Path, threshold: float, show_all: bool) -> None:
    """The table of changed (or, with --all, every compared) values, the summary, status changes, unpaired cells."""
    from tabulate import tabulate

    shown_changes = [c for c in result.changes if c.flagged or show_all]
    if shown_changes:
        rows = [
            (
                c.cell,
                c.name,
                f"{c.before:.4g}",
                f"{c.after:.4g}",
                f"{c.relative:+.1%}",
                short_test(c.test) + ("" if c.p is None else f" p={c.p:.2g}") + holm_note(c),
                c.verdict,
            )
            for c in shown_changes
        ]
        typer.echo(f"A: {run_a}\nB: {run_b}")
        headers = ["cell", "value", "A", "B", "change", "test", "verdict"]
        typer.echo(tabulate(rows, headers=headers, disable_numparse=True, colalign=ALIGN))
        typer.echo(CELL_LEGEND)
    contended = len({c.key for c in result.changes if c.contended})
    speeds = sum(1 for c in result.changes if c.kind in TIMED_KINDS and c.p is not None)
    typer.echo(
        f"compared {result.compared_values} value(s) of {result.compared_cells} cell(s) ok in both runs at threshold "
        f"{threshold:.1%}, alpha {SIGNIFICANCE} "
        f"(Holm across {speeds} speed value(s)); {sum(c.flagged for c in result.changes)} value(s) changed beyond "
        "the threshold" + (f"; {contended} cell(s) ran contended in A or B (speeds not judged)" if contended else "")
    )
    if speeds:
        typer.echo(SPEED_CAVEAT)
    for line in result.status_changes:
        typer.echo(f"REGRESSION status: {line}")
    for line in result.incomplete:
        typer.echo(f"not compared: {line}")
    for label, cells in ((f"only in {run_a}", result.only_a), (f"only in {run_b}", result.only_b)):
        for cell in cells:
            typer.echo(f"{label}: {cell}")


def holm_note(change: Change) -> str:
    """`` (Holm 0.03)`` where Holm's correction changed the value's p-value."""
    adjusted = change.p_adjusted
    return "" if adjusted is None or adjusted == change.p else f" (Holm {adjusted:.2g})"


def exit_code(result: Comparison, run_a: Path, run_b: Path) -> int:
    """1 on a regression, when nothing was compared, when a cell's metrics are missing on either side, or when
    cells of ``run_a`` are missing from ``run_b``."""
    if result.regressions:
        typer.echo(f"{result.regressions} regression(s)", err=True)
        return 1
    if result.incomplete:
        typer.echo(
            f"error: {len(result.incomplete)} cell(s) ok in both runs lack their metrics on one side or both (a "
            "truncated or edited record): their accuracy was not compared",
            err=True,
        )
        return 1
    if not result.compared_cells:
        typer.echo(
            f"error: nothing was compared: no cell of {run_a} has values in both runs (disjoint runs, or records "
            "without metrics); a check that compares nothing cannot pass",
            err=True,
        )
        return 1
    if result.only_a:
        typer.echo(f"{len(result.only_a)} cell(s) of {run_a} are missing from {run_b}", err=True)
        return 1
    return 0


def short_test(test: str) -> str:
    """The test's name as a table column holds it (MWU: Mann-Whitney U; the summary line spells it out)."""
    return test.replace("Mann-Whitney U", "MWU").replace("two-proportion", "2-prop")
