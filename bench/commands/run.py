"""``bench run``: train, evaluate and measure every cell of a sweep, with a progress display; records and report."""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

import typer
from rich.console import Console

from bench.commands import command
from bench.commands.common import (
    fail,
    interrupt_code,
    plan_command_line,
    print_dry_run,
    sigterm_as_interrupt,
    with_options,
)
from bench.commands.progress import display_for, setup_line
from bench.config import CellConfig, ConfigError, RunConfig
from bench.records import RECORDS_FILE, RecordWriteError
from bench.runner import RunSummary, retried_line, run_cells


@command("run", order=10)
def run(**given: Any) -> None:
    """Train, evaluate and measure every selected model on the same data; write records and a report."""
    planned = plan_command_line(given)
    if planned.run.dry_run:
        print_dry_run(planned.cells, planned.run_dir, planned.run)
        return
    execute(planned.cells, planned.run_dir, planned.run)


with_options(run)


def safe_report(run_dir: Path, baseline: str, console: Console) -> Path | None:
    """The report, or None with one line saying why it could not be written (the records are kept)."""
    from bench.commands.report import baseline_gaps
    from bench.records import latest_records
    from bench.report import write_report

    try:
        path = write_report(run_dir, baseline)
    except (OSError, ConfigError) as error:
        reason = error.strerror if isinstance(error, OSError) and error.strerror else error
        console.print(f"error: cannot write the report in {run_dir}: {reason} (the records are kept)")
        return None
    for line in baseline_gaps(latest_records(run_dir), baseline):
        console.print(f"warning: {line}")
    return path


def execute(cells: list[CellConfig], run_dir: Path, run_config: RunConfig) -> None:
    """Run the cells with a progress display, then write the report; exit 1 when a cell did not finish ok."""
    console = Console(stderr=True, soft_wrap=True)  # a piped log gets whole lines, not 80-column pieces
    summary = run_with_progress(cells, run_dir, run_config, console)
    line = retried_line(summary.retried)
    if line:
        console.print(line)
    if summary.skipped:
        console.print(f"skipped {summary.skipped} cell(s) already recorded in {run_dir} (--force re-runs them)")
    report = safe_report(run_dir, run_config.baseline, console)
    statuses = ", ".join(f"{n} {s}" for s, n in sorted(summary.statuses.items())) or "nothing new"
    typer.echo(f"ran {summary.ran} cell(s): {statuses}")
    typer.echo(f"records: {run_dir / RECORDS_FILE}")
    typer.echo(f"report:  {report}")
    if report is None or sum(n for s, n in summary.statuses.items() if s != "ok"):
        raise typer.Exit(1)


def run_with_progress(cells: list[CellConfig], run_dir: Path, run_config: RunConfig, console: Console) -> RunSummary:
    """``run_cells`` under the progress display; an interrupt or a record that cannot be written ends the run with
    its exit code, the finished cells kept (and reported, on an interrupt)."""
    from bench.runner import pending

    try:
        to_run = len(pending(cells, run_dir, run_config.force, run_config.keep_failed).todo)
    except ConfigError as error:
        fail(str(error))
    display = display_for(console, to_run)
    display.say(setup_line(cells, to_run))
    with display:
        try:
            with sigterm_as_interrupt():
                return run_cells(cells, run_dir, run_config, display.on_progress, display.on_done)
        except KeyboardInterrupt:
            display.stop()
            records = run_dir / RECORDS_FILE
            recorded = records.is_file() and records.stat().st_size > 0
            report = safe_report(run_dir, run_config.baseline, console) if recorded else None
            how = "terminated (SIGTERM)" if interrupt_code() == 128 + signal.SIGTERM else "interrupted"
            console.print(f"{how}: finished cells are recorded in {run_dir}; report so far: {report}")
            raise typer.Exit(interrupt_code()) from None
        except RecordWriteError as error:
            display.stop()
            console.print(
                f"error: {error.strerror}; the records file is whole (the cell that could not be recorded is "
                f"lost; re-run to compute it once there is room)"
            )
            raise typer.Exit(1) from None
        except ConfigError as error:
            display.stop()
            fail(str(error))
