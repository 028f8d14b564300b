"""``bench ab``: the command line of an A/B. The A/B itself is bench/ab.py (plan, pairs, records), bench/ab_sides.py
(sides and their processes), bench/ab_verdict.py (verdicts) and bench/ab_report.py (ab.md)."""

from __future__ import annotations

import inspect
import shlex
from pathlib import Path
from typing import Any

import typer

from bench.ab import AbConfig, AbPlan, make_plan
from bench.commands import command
from bench.commands.common import command_settings, fail, interrupt_code, sigterm_as_interrupt, with_options
from bench.config import RunConfig, SweepConfig
from bench.declare import declared
from bench.errors import ConfigError
from bench.options import CELL_GROUPS, OPTIONS, check_settings, cli_parameters
from bench.records import RecordWriteError

RUN_OPTIONS = ("timeout", "out", "run_id", "dry_run")  # the run-level options of `bench run` that bench ab takes
CELL_OPTIONS = [o for o in OPTIONS.values() if o.owner in (SweepConfig, *CELL_GROUPS)]
SIDE_OPTIONS = {o.name for o in CELL_OPTIONS} - {"sweep"}  # what --a-args / --b-args may hold
OWN = {o.name for o in declared(AbConfig)}


@command("ab", order=60)
def ab(ctx: typer.Context, **given: Any) -> None:
    """Is side B faster or slower than side A? Pairs of fresh processes doing fixed work, one per side, back to
    back in a random order, judged by an exact paired test on their ratios (docs/speed-verdicts.md). A side is
    --a/--b REV (a git revision; default: this working tree) and/or --a-args/--b-args (cell options) and
    --a-env/--b-env. Exits 1 on a REGRESSION verdict or a failed side."""
    from bench.runner import _command_line
    from rerankers import UnknownModelError

    own = {name: value for name in OWN if (value := given.pop(name)) is not None}
    run = {name: value for name in RUN_OPTIONS if (value := given.pop(name)) is not None}
    try:
        config = AbConfig(**own)
        extra = {side: side_settings(ctx, getattr(config, f"{side.lower()}_args"), side) for side in "AB"}
        plan = make_plan(config, command_settings(given), extra, RunConfig.from_settings(run), _command_line())
    except (ConfigError, UnknownModelError) as error:
        fail(str(error))
    if run.get("dry_run"):
        print_dry_run(plan)
        return
    execute(plan)


with_options(
    ab,
    first=[inspect.Parameter("ctx", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=typer.Context)]
    + cli_parameters(declared(AbConfig)),
    options=[*CELL_OPTIONS, *(OPTIONS[name] for name in RUN_OPTIONS)],
)


def side_settings(ctx: typer.Context, text: str, side: str) -> dict[str, Any]:
    """The cell options in --a-args / --b-args, parsed and checked as bench ab's own command line is."""
    flag = f"--{side.lower()}-args"
    click_error = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException")
    try:
        parsed = ctx.command.make_context(flag, shlex.split(text))
    except ValueError as error:  # shlex: an unclosed quote
        raise ConfigError(f"{flag}: {error}") from None
    except click_error as error:
        raise ConfigError(f"{flag}: {error.format_message()}") from None
    given = {k: v for k, v in parsed.params.items() if v is not None and v != [] and v != ()}
    other = sorted(set(given) - SIDE_OPTIONS)
    if other:
        raise ConfigError(f"{flag} takes cell options only, not {', '.join('--' + n.replace('_', '-') for n in other)}")
    try:
        return check_settings(given)
    except ConfigError as error:
        raise ConfigError(f"{flag}: {error}") from None


def print_dry_run(plan: AbPlan) -> None:
    """Each side and its models, and the processes the A/B would run; nothing runs."""
    from bench.sweep import build_cells

    for side in plan.sides.values():
        typer.echo(f"{side.describe()}: {', '.join(c.model for c in build_cells(side.settings))}")
    cells = len(build_cells(plan.sides["A"].settings))
    typer.echo(f"{cells} cell(s) x {plan.config.pairs} pair(s) x 2 processes into {plan.run_dir} (nothing run)")


def execute(plan: AbPlan) -> None:
    """Run (or resume) the A/B under the run directory's lock, then write ab.md and print the verdicts; exit 1 on
    a REGRESSION or a failed side, the pairs finished so far kept either way."""
    from rich.console import Console

    from bench.ab import AB_FILE, SideFailed, record_file_collision, run_ab
    from bench.ab_report import write_ab_report
    from bench.runner import open_run

    console = Console(stderr=True, highlight=False, soft_wrap=True)
    try:
        record_file_collision(plan.run_dir)
        with open_run(plan.run_dir, AB_FILE), sigterm_as_interrupt():
            run_ab(plan, plan.config.repo or Path.cwd(), console.print)
    except ConfigError as error:
        fail(str(error))
    except SideFailed as error:
        report_so_far(plan, console)
        typer.echo(f"error: {error}" + (f"\n{error.tail}" if error.tail else ""), err=True)
        typer.echo(f"the pairs finished so far are kept in {plan.run_dir / AB_FILE}; re-run to continue", err=True)
        raise typer.Exit(1) from None
    except KeyboardInterrupt:
        report = report_so_far(plan, console)
        console.print(f"interrupted: finished pairs are kept in {plan.run_dir}; report so far: {report}")
        raise typer.Exit(interrupt_code()) from None
    except RecordWriteError as error:
        typer.echo(f"error: {error.strerror}; the pairs recorded so far are whole, re-run to continue", err=True)
        raise typer.Exit(1) from None
    path, result = write_ab_report(plan.run_dir)
    print_verdicts(result)
    typer.echo(f"report: {path}")
    if result.regressions:
        raise typer.Exit(1)


def report_so_far(plan: AbPlan, console: Any) -> Path | None:
    """ab.md from the pairs recorded so far, or None with one line saying why it could not be written."""
    from bench.ab_report import write_ab_report

    try:
        return write_ab_report(plan.run_dir)[0]
    except (OSError, ConfigError) as error:
        console.print(f"error: cannot write the A/B report in {plan.run_dir}: {error} (the records are kept)")
        return None


def print_verdicts(result: Any) -> None:
    """The verdict table of ab.md, as plain text."""
    from tabulate import tabulate

    from bench.ab_report import VERDICT_HEADERS, verdict_rows

    rows = [[cell.replace("**", "") for cell in row] for row in verdict_rows(result)]
    typer.echo(tabulate(rows, headers=VERDICT_HEADERS))
