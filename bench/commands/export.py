"""``bench export``: a run's cells as one flat table (csv, parquet or json), for pandas and spreadsheets."""

from __future__ import annotations

from pathlib import Path

import typer

from bench.commands import command
from bench.commands.common import fail
from bench.records import RECORDS_FILE


@command("export", order=45)
def export(
    run_dir: Path = typer.Argument(..., help="A run directory holding records.jsonl."),
    fmt: str = typer.Option("csv", "--format", help="csv | parquet | json (parquet needs pyarrow) [csv]"),
    out: Path | None = typer.Option(None, "--out", help="The file to write [RUN/cells.FORMAT]"),
    show_units: bool = typer.Option(False, "--units", help="Print each column's unit from the catalog, write nothing."),
) -> None:
    """One flat row per cell (its latest record): identity, axes, every metric and measurement under the metric
    catalog's names, the 95% interval of each timed median, and the contention flag."""
    from bench.export import FORMATS, cells_table, parquet_available, units, write_table

    if show_units:
        for name, unit in units().items():
            typer.echo(f"{name}\t{unit or '-'}")
        return
    if fmt not in FORMATS:
        fail(f"--format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    if fmt == "parquet" and not parquet_available():
        fail("--format parquet needs pyarrow (pip install pyarrow); csv and json need nothing more")
    if not (run_dir / RECORDS_FILE).is_file():
        fail(f"{run_dir} has no {RECORDS_FILE}")
    path = out or run_dir / f"cells.{fmt}"
    table = cells_table(run_dir)
    try:
        write_table(table, path, fmt)
    except OSError as error:
        fail(f"cannot write {path}: {error.strerror or error}")
    typer.echo(f"{len(table)} cells, {table.shape[1]} columns: {path}")
