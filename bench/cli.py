"""The ``bench`` command line: run, list, report."""

from __future__ import annotations

import inspect
import math
import signal
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import typer
from rich.markup import escape

from bench.config import (
    DEVICES,
    EXECUTION,
    MEASUREMENT,
    MODELS,
    OUTPUT,
    WORKLOAD,
    CellConfig,
    ConfigError,
    RunConfig,
    WorkloadConfig,
    profile,
)
from bench.options import OPTIONS, Option, check_settings
from bench.records import RecordWriteError, RunLock, check_writable
from bench.runner import run_cells

app = typer.Typer(
    add_completion=False,
    pretty_exceptions_enable=False,
    no_args_is_help=True,
    help="Benchmark neural re-rankers: accuracy, speed and memory on the same data and hardware.",
)


def fail(message: str) -> None:
    """One clear line on stderr and exit code 2, for any bad input."""
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(2)


def resolve_device(name: str) -> str:
    import torch

    if name not in DEVICES:
        fail(f"unknown device {name!r} (choose from {', '.join(DEVICES)})")
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        fail("--device cuda was requested but no CUDA GPU is available (use --device cpu or auto)")
    return name


PANELS = (WORKLOAD, MODELS, MEASUREMENT, EXECUTION, OUTPUT)


def shown(value: Any, spec: str) -> str:
    """A number for a progress line; a missing or non-finite one (no judged slate, a diverged loss) is n/a."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return "n/a"
    return format(value, spec)


def _cli_parameter(option: Option) -> inspect.Parameter:
    """The typer parameter of a declared option: every value defaults to None ("not given")."""
    if option.repeatable:
        annotation: Any = list[option.type] | None
    elif (option.axis is not None or option.allow_inf) and option.type is not str:
        annotation = str | None  # a comma list of values, or "inf": parsed and checked with the option
    else:
        annotation = option.type | None
    default = typer.Option(None, *option.cli_flags, help=escape(option.help), rich_help_panel=option.panel)
    return inspect.Parameter(option.name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=annotation)


def _plan(given: dict[str, Any], default_label: str) -> tuple[RunConfig, list[CellConfig], Path]:
    """Command-line values (None: not given) and the sweep file -> the validated run, its cells and directory."""
    from bench.sweep import load_sweep_file, plan
    from rerankers import UnknownModelError

    try:
        sweep = given.pop("sweep")
        settings = load_sweep_file(sweep) if sweep else {}
        settings.update(
            check_settings({k: v for k, v in given.items() if v is not None}, "command line", command_line=True)
        )
        settings["device"] = resolve_device(str(settings.get("device", "auto")))
        run_config, cells = plan(settings)
        if cells[0].workload.data == "letor":
            _prepare_letor(cells[0].workload)
    except (ConfigError, UnknownModelError) as error:
        fail(str(error))
    for cell in cells:
        _check_constructible(cell)
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    run_dir = run_config.out / (run_config.run_id or f"{stamp}-{settings.get('profile', 'default')}{default_label}")
    return run_config, cells, run_dir


def _run(**given: Any) -> None:
    """Train, evaluate and measure every selected model on the same data; write records and a report."""
    run_config, cells, run_dir = _plan(given, "")
    if run_config.dry_run:
        _print_dry_run(cells, run_dir, run_config.force, run_config.keep_failed)
        return
    _execute(cells, run_dir, run_config)


def _tune(trials: int | None = None, minutes: float | None = None, **given: Any) -> None:
    """Tune each model's learning rate and sizes on the validation split, then test defaults vs tuned settings.

    Takes `bench run`'s options (one value per axis; --seeds N: the seeds of the final test runs, default 3).
    """
    from bench.runner import make_executor
    from bench.tune import Budget, base_cells, run_tune, trial_runner
    from bench.tune_report import write_tune_report

    seeds = given.pop("seeds") or 3
    run_config, cells, run_dir = _plan(given, "-tune")
    try:
        trials = 20 if trials is None and minutes is None else trials
        budget = Budget(trials=trials, minutes=minutes, seeds=seeds)
        bases = base_cells(cells)
    except ConfigError as error:
        fail(str(error))
    if run_config.dry_run:
        _print_dry_run(bases, run_dir / "trials", run_config.force, run_config.keep_failed)
        return
    try:
        check_writable(run_dir)
        check_writable(run_dir / "trials")
    except ConfigError as error:
        fail(str(error))

    def on_trial(record: dict[str, Any]) -> None:
        t = record["tuning"]
        value = shown(t["value"], ".3f")
        typer.echo(f"{record['model']:<12} trial {t['trial']:>3}  {record['status']:<7} valid slate_acc {value}")

    def run_final(final: list[CellConfig], tags: dict[str, Any]) -> None:
        run_cells(final, run_dir, run_config, tags=tags)

    try:
        with RunLock(run_dir), _sigterm_as_interrupt():
            run_tune(bases, run_dir, budget, trial_runner(make_executor(run_config)), run_final, on_trial)
    except ConfigError as error:
        fail(str(error))
    except RecordWriteError as error:
        typer.echo(f"error: {error.strerror}; the records written so far are whole, re-run to continue", err=True)
        raise typer.Exit(1) from None
    except KeyboardInterrupt:
        typer.echo(f"interrupted: finished trials and cells are recorded in {run_dir}; re-run to continue", err=True)
        raise typer.Exit(_interrupt_code()) from None
    try:
        typer.echo(f"tune report: {write_tune_report(run_dir)}")
    except ConfigError as error:
        fail(str(error))
    except OSError as error:
        typer.echo(f"error: cannot write the tune report in {run_dir}: {error.strerror or error}", err=True)
        raise typer.Exit(1) from None


_ordered = sorted(OPTIONS.values(), key=lambda o: PANELS.index(o.panel))
_run.__signature__ = inspect.Signature([_cli_parameter(o) for o in _ordered])  # type: ignore[attr-defined]
_run.__annotations__ = {p.name: p.annotation for p in _run.__signature__.parameters.values()}  # type: ignore[attr-defined]
run = app.command("run")(_run)
_TUNE_BUDGET = [
    inspect.Parameter(
        "trials",
        inspect.Parameter.KEYWORD_ONLY,
        default=typer.Option(None, help="Finished trials (complete or pruned) per model [20 without --minutes]."),
        annotation=int | None,
    ),
    inspect.Parameter(
        "minutes",
        inspect.Parameter.KEYWORD_ONLY,
        default=typer.Option(None, help="Wall-clock minutes of trials per model (alone or with --trials)."),
        annotation=float | None,
    ),
]
_tune.__signature__ = inspect.Signature(_TUNE_BUDGET + [_cli_parameter(o) for o in _ordered])  # type: ignore[attr-defined]
_tune.__annotations__ = {p.name: p.annotation for p in _tune.__signature__.parameters.values()}  # type: ignore[attr-defined]
tune = app.command("tune")(_tune)


def _print_dry_run(cells: list[CellConfig], run_dir: Path, force: bool, keep_failed: bool = False) -> None:
    from tabulate import tabulate

    from bench.runner import pending_cells, recorded_status

    try:
        todo = {c.key() for c in pending_cells(cells, run_dir, force, keep_failed)}
        status = {} if force else recorded_status(run_dir)
    except ConfigError as error:
        fail(str(error))
    rows = [
        (
            c.model,
            c.workload.world,
            c.train.loss,
            c.seed,
            c.workload.batch_size,
            c.workload.slate_length,
            c.workload.candidates,
            c.workload.user_dim,
            c.workload.item_dim,
            c.key(),
            ("run" if c.key() not in status else f"retry ({status[c.key()]})") if c.key() in todo else "recorded",
        )
        for c in cells
    ]
    headers = [
        "model",
        "world",
        "loss",
        "seed",
        "batch",
        "slate T",
        "candidates S",
        "user dim",
        "item dim",
        "key",
        "action",
    ]
    typer.echo(tabulate(rows, headers=headers))
    typer.echo(f"{len(cells)} cells: {len(todo)} to run, {len(cells) - len(todo)} already recorded in {run_dir}")
    _say_retried(cells, todo, run_dir, typer.echo)


def _say_retried(cells: list[CellConfig], todo: set[str], run_dir: Path, say: Any) -> None:
    """Name the cells that are run again because their record is not ok (resume retries them by default)."""
    from collections import Counter

    from bench.runner import recorded_status

    status = recorded_status(run_dir)
    again = Counter(status[c.key()] for c in cells if c.key() in todo and c.key() in status)
    if again:
        listed = ", ".join(f"{n} {s}" for s, n in sorted(again.items()))
        say(f"retrying {sum(again.values())} cell(s) recorded as not ok ({listed}); --keep-failed keeps them")


_interrupted_by: list[int] = []  # the signal that interrupted the run (SIGINT or SIGTERM)


def _interrupt_code() -> int:
    return 128 + (_interrupted_by[-1] if _interrupted_by else signal.SIGINT)


class _sigterm_as_interrupt:  # noqa: N801 - used as a context manager, like a function
    """While running, SIGTERM (a supervisor, `kill`, a batch system's stop) does what Ctrl-C does."""

    def __enter__(self) -> None:
        _interrupted_by.clear()

        def interrupt(number: int, frame: Any) -> None:
            _interrupted_by.append(number)
            raise KeyboardInterrupt

        self.previous = signal.signal(signal.SIGTERM, interrupt)
        self.previous_int = signal.signal(signal.SIGINT, interrupt)

    def __exit__(self, *exc: Any) -> None:
        signal.signal(signal.SIGTERM, self.previous)
        signal.signal(signal.SIGINT, self.previous_int)


def _safe_report(run_dir: Path, baseline: str, console: Any) -> Path | None:
    """The report, or None with one line saying why it could not be written (the records are kept)."""
    from bench.report import write_report

    try:
        return write_report(run_dir, baseline)
    except (OSError, ConfigError) as error:
        reason = error.strerror if isinstance(error, OSError) and error.strerror else error
        console.print(f"error: cannot write the report in {run_dir}: {reason} (the records are kept)")
        return None


def _execute(cells: list[CellConfig], run_dir: Path, run_config: RunConfig) -> None:
    from rich.console import Console

    from bench.runner import pending_cells

    console = Console(stderr=True)
    try:  # everything that could stop the run is checked before any compute
        check_writable(run_dir)
        lock = RunLock(run_dir)
        lock.__enter__()
    except ConfigError as error:
        fail(str(error))
    try:
        try:
            todo = {c.key() for c in pending_cells(cells, run_dir, run_config.force, run_config.keep_failed)}
        except ConfigError as error:
            fail(str(error))
        _say_retried(cells, todo, run_dir, console.print)
        summary = _run_with_progress(cells, run_dir, run_config, console)
    finally:
        lock.__exit__(None, None, None)
    if summary.skipped:
        console.print(f"skipped {summary.skipped} cell(s) already recorded in {run_dir} (--force re-runs them)")
    report = _safe_report(run_dir, run_config.baseline, console)
    statuses = ", ".join(f"{n} {s}" for s, n in sorted(summary.statuses.items())) or "nothing new"
    typer.echo(f"ran {summary.ran} cell(s): {statuses}")
    typer.echo(f"records: {run_dir / 'records.jsonl'}")
    typer.echo(f"report:  {report}")
    if report is None or sum(n for s, n in summary.statuses.items() if s != "ok"):
        raise typer.Exit(1)


def _run_with_progress(cells: list[CellConfig], run_dir: Path, run_config: RunConfig, console: Any) -> Any:
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    from bench.executor import Progress as CellProgress

    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=True,
    ) as progress:
        overall = progress.add_task("cells", total=len(cells))
        current = progress.add_task("", total=1)

        def on_progress(event: CellProgress) -> None:
            cell = event.cell
            if event.epoch is None:
                w = cell.workload
                progress.update(
                    overall,
                    description=f"cell {cell.model} seed {cell.seed} batch {w.batch_size} T {w.slate_length} "
                    f"S {w.candidates} U {w.user_dim} F {w.item_dim}",
                )
                progress.reset(current, total=cell.train.epochs, description="  data + first epoch")
                return
            progress.update(
                current,
                completed=event.epoch,
                description=f"  epoch {event.epoch}/{cell.train.epochs} loss {shown(event.loss, '.4f')} "
                f"valid slate_acc {shown(event.valid_slate_acc, '.3f')}",
            )

        def on_done(record: dict[str, Any]) -> None:
            progress.advance(overall)
            m, x, w = record["metrics"], record["measurements"], record["config"]["workload"]
            where = f"seed {record['config']['seed']} batch {w['batch_size']} T {w['slate_length']}"
            if record["status"] == "ok":
                progress.console.print(
                    f"{record['model']:<12} {where}  ok  slate_acc {shown(m.get('slate_acc'), '.3f')}  "
                    f"train {shown(x.get('train_samples_per_s') or 0, ',.0f')} samples/s  "
                    f"wall {shown(x.get('wall_seconds'), '.1f')}s"
                )
            else:
                progress.console.print(f"{record['model']:<12} {where}  {record['status']}: {record['error']}")

        try:
            with _sigterm_as_interrupt():
                return run_cells(cells, run_dir, run_config, on_progress, on_done)
        except KeyboardInterrupt:
            progress.stop()
            report = _safe_report(run_dir, run_config.baseline, console) if _has_records(run_dir) else None
            how = "terminated (SIGTERM)" if _interrupt_code() == 128 + signal.SIGTERM else "interrupted"
            console.print(f"{how}: finished cells are recorded in {run_dir}; report so far: {report}")
            raise typer.Exit(_interrupt_code()) from None
        except RecordWriteError as error:
            progress.stop()
            console.print(
                f"error: {error.strerror}; the records file is whole (the cell that could not be recorded is "
                f"lost; re-run to compute it once there is room)"
            )
            raise typer.Exit(1) from None
        except ConfigError as error:
            progress.stop()
            fail(str(error))


def _has_records(run_dir: Path) -> bool:
    path = run_dir / "records.jsonl"
    return path.is_file() and path.stat().st_size > 0


def _prepare_letor(workload: WorkloadConfig) -> None:
    """Parse (or find cached) every LETOR split before any cell runs: bad files stop the run here."""
    from rich.console import Console

    from bench.letor import prepare

    console = Console(stderr=True)
    sizes = prepare(workload, progress=console.print)
    console.print("LETOR queries: " + ", ".join(f"{split} {count:,}" for split, count in sizes.items()))


# Bytes per parameter while training: fp32 weights, gradients and Adam's two moments.
TRAINING_BYTES_PER_PARAMETER = 16


def _check_constructible(cell: CellConfig) -> None:
    """Catch bad model options before any cell starts, with the model's own message, and a model too large
    for this machine (counted on the meta device, which allocates nothing)."""
    import torch

    from bench.config import physical_memory_bytes
    from rerankers import build_model

    def build() -> torch.nn.Module:
        return build_model(
            cell.model, user_dim=cell.workload.user_dim, item_dim=cell.workload.item_dim, **cell.model_kwargs
        )

    try:
        with torch.device("meta"):
            parameters = sum(p.numel() for p in build().parameters())
    except Exception:  # noqa: BLE001 - the real construction below gives the model's own message
        parameters = None
    memory = physical_memory_bytes()
    if parameters and memory and parameters * TRAINING_BYTES_PER_PARAMETER > memory:
        fail(
            f"model {cell.model!r} with options {cell.model_kwargs} has {parameters:,} parameters: training needs "
            f"about {parameters * TRAINING_BYTES_PER_PARAMETER / 2**30:,.0f} GiB, more than this machine's "
            f"{memory / 2**30:,.0f} GiB"
        )
    try:
        build()
    except Exception as error:  # noqa: BLE001 - whatever a constructor raises on bad options is bad input
        fail(f"model {cell.model!r} rejects its options {cell.model_kwargs}: {type(error).__name__}: {error}")


@app.command("list")
def list_command(
    profile_name: str = typer.Option("default", "--profile", help="Sizes used for the parameter counts."),
) -> None:
    """Registered models with parameter counts (at the profile's sizes) and a description."""
    from bench.measure import parameter_count
    from rerankers import build_model, get_spec, model_names

    try:
        settings = profile(profile_name)
    except ConfigError as error:
        fail(str(error))
    workload = settings["workload"]
    rows = []
    for name in model_names():
        spec = get_spec(name)
        accepted = spec.options()
        options = {k: v for k, v in settings.get("model_kwargs", {}).items() if k in accepted}
        model = build_model(name, user_dim=workload.user_dim, item_dim=workload.item_dim, **options)
        defaults = ", ".join(f"{k}={v}" for k, v in spec.options().items())
        rows.append((name, f"{parameter_count(model):,}", spec.description, defaults))
    from tabulate import tabulate

    typer.echo(f"parameters at the {profile_name!r} profile's sizes")
    typer.echo(tabulate(rows, headers=["model", "params", "description", "options (defaults)"]))


@app.command()
def report(
    run_dir: Path = typer.Argument(..., help="A run directory holding records.jsonl."),
    baseline: str = typer.Option("mlp", help="Model the report compares the others with."),
) -> None:
    """Rebuild report.md from the run's records alone."""
    from bench.records import RECORDS_FILE, latest_records
    from bench.report import write_report
    from rerankers import UnknownModelError, get_spec
    from rerankers.registry import did_you_mean

    if not (run_dir / RECORDS_FILE).is_file():
        fail(f"{run_dir} has no {RECORDS_FILE}")
    try:
        models = {r["model"] for r in latest_records(run_dir)}
        if baseline not in models:
            try:
                get_spec(baseline)  # a registered model that this run lacks: the report says so
            except UnknownModelError:
                known = sorted(models)
                fail(
                    f"baseline {baseline!r} is neither a model of this run nor a registered one"
                    f"{did_you_mean(baseline, known)} (this run: {', '.join(known) or 'no records'})"
                )
        path = write_report(run_dir, baseline)
    except ConfigError as error:
        fail(str(error))
    except OSError as error:
        fail(f"cannot write the report in {run_dir}: {error.strerror or error} (the records are untouched)")
    typer.echo(f"report: {path}")


@app.command()
def compare(
    run_a: Path = typer.Argument(..., help="The reference run directory."),
    run_b: Path = typer.Argument(..., help="The run to check against it."),
    threshold: float = typer.Option(0.05, help="Relative change that is flagged (0.05 = 5%)."),
    include_contended: bool = typer.Option(
        False, help="Also call regressions the speeds of cells measured under contention."
    ),
    show_all: bool = typer.Option(False, "--all", help="Print every compared value, not only flagged ones."),
) -> None:
    """Per-cell changes of every metric; exits 1 on a regression (worse beyond the threshold and significant:
    speeds by Mann-Whitney U on the timing samples, slate_acc by McNemar or two-proportion), and when nothing
    was compared or cells of the reference are missing from the run checked."""
    from tabulate import tabulate

    from bench.compare import ALPHA, compare_runs
    from bench.records import RECORDS_FILE

    for run_dir in (run_a, run_b):
        if not (run_dir / RECORDS_FILE).is_file():
            fail(f"{run_dir} has no {RECORDS_FILE}")
    if not (math.isfinite(threshold) and threshold >= 0):
        fail(f"threshold must be a finite number >= 0, got {threshold}")
    try:
        result = compare_runs(run_a, run_b, threshold, include_contended)
    except ConfigError as error:
        fail(str(error))
    shown = [c for c in result.changes if c.flagged or show_all]
    if shown:
        rows = [
            (
                c.cell,
                c.name,
                f"{c.before:.4g}",
                f"{c.after:.4g}",
                f"{c.relative:+.1%}",
                c.test + ("" if c.p is None else f" p={c.p:.2g}"),
                c.verdict,
            )
            for c in shown
        ]
        typer.echo(tabulate(rows, headers=["cell", "value", run_a.name, run_b.name, "relative", "test", "verdict"]))
    contended = len({c.key for c in result.changes if c.contended})
    typer.echo(
        f"compared {result.compared_cells} cell(s) ok in both runs at threshold {threshold:.1%}, alpha {ALPHA}; "
        f"{sum(c.flagged for c in result.changes)} value(s) changed beyond the threshold"
        + (f"; {contended} cell(s) contended on one side" if contended else "")
    )
    for line in result.status_changes:
        typer.echo(f"REGRESSION status: {line}")
    for label, cells in ((f"only in {run_a}", result.only_a), (f"only in {run_b}", result.only_b)):
        for cell in cells:
            typer.echo(f"{label}: {cell}")
    if result.regressions:
        typer.echo(f"{result.regressions} regression(s)", err=True)
        raise typer.Exit(1)
    if not result.compared_cells:
        typer.echo(
            f"error: nothing was compared: no cell of {run_a} has values in both runs (disjoint runs, or records "
            "without metrics); a check that compares nothing cannot pass",
            err=True,
        )
        raise typer.Exit(1)
    if result.only_a:
        typer.echo(f"{len(result.only_a)} cell(s) of {run_a} are missing from {run_b}", err=True)
        raise typer.Exit(1)


def main() -> None:
    """Console entry point: usage errors become one ``error:`` line and exit code 2."""
    import warnings

    # A skipped record line or a lock-less file system is one "warning:" line naming file and line, not a
    # Python warning with a source excerpt.
    warnings.formatwarning = lambda message, category, filename, lineno, line=None: f"warning: {message}\n"
    # Recent typer vendors click, older typer uses click itself: find the base class either way.
    click_error = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException")
    try:
        code = app(standalone_mode=False)
    except click_error as error:
        if type(error).__name__ == "NoArgsIsHelpError" and getattr(error, "ctx", None):
            typer.echo(error.ctx.get_help())
            sys.exit(0)
        typer.echo(f"error: {error.format_message()}", err=True)
        code = 2
    except typer.Abort:
        code = 130
    sys.exit(code or 0)


if __name__ == "__main__":
    main()
