"""``bench report``: rebuild report.md (and its plots) from a run's records alone."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

from bench.commands import command
from bench.commands.common import fail
from bench.config import ConfigError, RunConfig
from bench.declare import declared_option
from bench.records import RECORDS_FILE, latest_records
from rerankers.registry import did_you_mean

BASELINE = declared_option(RunConfig, "baseline")


@command("report", order=40)
def report(
    run_dir: Path = typer.Argument(..., help="A run directory holding records.jsonl."),
    baseline: str | None = typer.Option(
        None, help=f"{BASELINE.help} It must be a model of the run. [default: {BASELINE.default}, where the run has it]"
    ),
) -> None:
    """Rebuild report.md from the run's records alone."""
    from bench.report import write_report

    if not (run_dir / RECORDS_FILE).is_file():
        fail(f"{run_dir} has no {RECORDS_FILE}")
    try:
        records = latest_records(run_dir)
        chosen = check_baseline(records, baseline)
        path = write_report(run_dir, chosen)
    except ConfigError as error:
        fail(str(error))
    except OSError as error:
        fail(f"cannot write the report in {run_dir}: {error.strerror or error} (the records are untouched)")
    for line in baseline_gaps(records, chosen):
        typer.echo(f"warning: {line}", err=True)
    typer.echo(f"report: {path}")


def check_baseline(records: list[dict[str, Any]], baseline: str | None) -> str:
    """The report's baseline: ``baseline``, which must be a model of the run (a ConfigError naming the run's models
    if not), or the default one when none is given."""
    if baseline is None:
        return BASELINE.default
    models = sorted({r["model"] for r in records})
    if baseline not in models:
        raise ConfigError(
            f"baseline {baseline!r} is not a model of this run{did_you_mean(baseline, models)} "
            f"(this run: {', '.join(models) or 'no records'}); the report compares every model with it"
        )
    return baseline


def baseline_gaps(records: list[dict[str, Any]], baseline: str) -> list[str]:
    """One line per group of cells (the same data and training, models and seeds aside) where other models ran and
    the baseline did not: their differences from it are empty there."""
    groups: dict[str, set[str]] = {}
    settings: dict[str, dict[str, Any]] = {}
    for record in records:
        config = {k: v for k, v in record["config"].items() if k not in ("model", "seed", "model_kwargs")}
        flat = _flatten(config)
        key = json.dumps(flat, sort_keys=True, default=str)
        groups.setdefault(key, set()).add(record["model"])
        settings[key] = flat
    names = {name for flat in settings.values() for name in flat}
    varying = {name for name in names if len({str(flat.get(name)) for flat in settings.values()}) > 1}
    lines = []
    for key, models in groups.items():
        if baseline in models:
            continue
        where = ", ".join(f"{name} {settings[key].get(name)}" for name in sorted(varying)) or "every cell"
        lines.append(f"the baseline {baseline} has no cell at {where} ({', '.join(sorted(models))} ran there): no Δ")
    return lines


def _flatten(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for name, value in config.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{name}."))
        else:
            flat[f"{prefix}{name}"] = value
    return flat
