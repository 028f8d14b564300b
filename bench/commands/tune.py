"""``bench tune``: each model's search on the validation split, then its defaults vs its best settings on test."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

import typer

from bench.commands import command, common
from bench.commands.progress import CellLines
from bench.config import CellConfig, ConfigError
from bench.records import RecordWriteError
from bench.runner import run_cells
from bench.tune import TRIAL_BATCH, TRIALS_DIR, Budget, base_cells, run_tune, trial_runner
from bench.tune_report import write_tune_report

TRIALS_WITHOUT_MINUTES = 20  # the budget when neither --trials nor --minutes is given
FINAL_SEEDS = 3  # seeds of the final test runs when --seeds is not given


@command("tune", order=20)
def tune(trials: int | None = None, minutes: float | None = None, parallel: int = 1, **given: Any) -> None:
    """Tune each model's learning rate and sizes on the validation split, then test defaults vs tuned settings.

    Takes `bench run`'s options (one value per axis; --seeds N: the seeds of the final test runs, default {seeds}).
    """
    seeds = given.pop("seeds") or FINAL_SEEDS
    planned = common.plan_command_line(given, "-tune")
    try:
        trials = TRIALS_WITHOUT_MINUTES if trials is None and minutes is None else trials
        budget = Budget(trials=trials, minutes=minutes, seeds=seeds, parallel=parallel)
        bases = base_cells(planned.cells)
        executor = planned.executor.with_parallel(parallel, bases)
    except ConfigError as error:
        common.fail(str(error))
    if planned.run.dry_run:
        common.print_dry_run(bases, planned.run_dir / TRIALS_DIR, planned.run)
        return

    def on_trial(record: dict[str, Any]) -> None:
        t = record["tuning"]
        value = common.shown(t["value"], ".3f")
        typer.echo(f"{record['model']:<12} trial {t['trial']:>3}  {record['status']:<7} valid slate_acc {value}")

    def run_final(final: list[CellConfig], tags: dict[str, Any]) -> None:
        lines = CellLines(len(final))
        lines.say(f"test cells (defaults and best settings, {seeds} seed(s) each): {len(final)}")
        run_cells(final, planned.run_dir, planned.run, on_done=lines.on_done, tags=tags, executor=executor)

    try:
        with common.sigterm_as_interrupt():
            run_tune(bases, planned.run_dir, budget, trial_runner(executor), run_final, on_trial)
    except ConfigError as error:
        common.fail(str(error))
    except RecordWriteError as error:
        typer.echo(f"error: {error.strerror}; the records written so far are whole, re-run to continue", err=True)
        raise typer.Exit(1) from None
    except KeyboardInterrupt:
        typer.echo(
            f"interrupted: finished trials and cells are recorded in {planned.run_dir}; re-run to continue",
            err=True,
        )
        raise typer.Exit(common.interrupt_code()) from None
    write_tune_md(planned.run_dir)


tune.__doc__ = (tune.__doc__ or "").format(seeds=FINAL_SEEDS)


def write_tune_md(run_dir: Path) -> None:
    """tune.md, or one line saying why it could not be written."""
    try:
        typer.echo(f"tune report: {write_tune_report(run_dir)}")
    except ConfigError as error:
        common.fail(str(error))
    except OSError as error:
        typer.echo(f"error: cannot write the tune report in {run_dir}: {error.strerror or error}", err=True)
        raise typer.Exit(1) from None


BUDGET = [
    inspect.Parameter(
        "trials",
        inspect.Parameter.KEYWORD_ONLY,
        default=typer.Option(
            None,
            help=f"Finished trials (complete or pruned) per model, the same for every model "
            f"[{TRIALS_WITHOUT_MINUTES} without --minutes].",
        ),
        annotation=int | None,
    ),
    inspect.Parameter(
        "minutes",
        inspect.Parameter.KEYWORD_ONLY,
        default=typer.Option(
            None,
            help="Minutes of trials per model, each trial's wall time summed (alone or with --trials; cheap "
            "models then get more trials than costly ones).",
        ),
        annotation=float | None,
    ),
    inspect.Parameter(
        "parallel",
        inspect.Parameter.KEYWORD_ONLY,
        default=typer.Option(
            1,
            help=f"Trials at once: N on the process executor (N x --threads within the cores), as many as the "
            f"cluster holds on Ray. Trials are asked in batches of max(N, {TRIAL_BATCH}): any N up to "
            f"{TRIAL_BATCH} gives the same trials.",
        ),
        annotation=int,
    ),
]
common.with_options(tune, BUDGET)


def _final_seeds_option() -> None:
    """In `bench tune`, --seeds counts the seeds of the final test runs: its help says so, with tune's default."""
    from rich.markup import escape

    from bench.options import OPTIONS

    seeds = OPTIONS["seeds"]
    text = f"Seeds of the final test runs: each model's defaults and best settings on each. [{FINAL_SEEDS}]"
    option = typer.Option(None, *seeds.cli_flags, help=escape(text), rich_help_panel=seeds.panel)
    signature = tune.__signature__  # type: ignore[attr-defined]
    parameters = [p.replace(default=option) if p.name == "seeds" else p for p in signature.parameters.values()]
    tune.__signature__ = signature.replace(parameters=parameters)  # type: ignore[attr-defined]


_final_seeds_option()
