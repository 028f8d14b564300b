"""``bench report``: rebuild report.md (and its plots) from a run's records alone."""

from __future__ import annotations

from pathlib import Path

import typer

from bench.commands import command
from bench.commands.common import fail
from bench.config import ConfigError, RunConfig
from bench.declare import declared_option
from bench.records import RECORDS_FILE, latest_records
from rerankers import UnknownModelError, get_spec
from rerankers.registry import did_you_mean

BASELINE = declared_option(RunConfig, "baseline")


@command("report", order=40)
def report(
    run_dir: Path = typer.Argument(..., help="A run directory holding records.jsonl."),
    baseline: str = typer.Option(BASELINE.default, help=BASELINE.help),
) -> None:
    """Rebuild report.md from the run's records alone."""
    from bench.report import write_report

    if not (run_dir / RECORDS_FILE).is_file():
        fail(f"{run_dir} has no {RECORDS_FILE}")
    try:
        check_baseline(run_dir, baseline)
        path = write_report(run_dir, baseline)
    except ConfigError as error:
        fail(str(error))
    except OSError as error:
        fail(f"cannot write the report in {run_dir}: {error.strerror or error} (the records are untouched)")
    typer.echo(f"report: {path}")


def check_baseline(run_dir: Path, baseline: str) -> None:
    """The baseline is a model of the run, or a registered one that the run lacks (the report says so)."""
    models = {r["model"] for r in latest_records(run_dir)}
    if baseline in models:
        return
    try:
        get_spec(baseline)
    except UnknownModelError:
        known = sorted(models)
        raise ConfigError(
            f"baseline {baseline!r} is neither a model of this run nor a registered one"
            f"{did_you_mean(baseline, known)} (this run: {', '.join(known) or 'no records'})"
        ) from None
