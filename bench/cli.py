"""The ``bench`` command line: run, list, report."""

from __future__ import annotations

import shlex
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import typer

from bench.config import DEVICES, CellConfig, ConfigError, WorkloadConfig, profile
from bench.runner import EXECUTORS, ISOLATIONS, run_cells

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


LIST_HELP = "Comma list: each value is a sweep axis point."


@app.command()
def run(
    models: str | None = typer.Option(None, help="'all', a comma list of names, or glob patterns (prm*)."),
    profile_name: str | None = typer.Option(None, "--profile", help="seed | default | smoke"),
    sweep: Path | None = typer.Option(None, help="TOML file describing the sweep; flags override it."),
    device: str | None = typer.Option(None, help="auto | cpu | cuda  [default: auto]"),
    seed: int | None = typer.Option(None, help="First seed of data, hidden value model and model init [0]."),
    seeds: int | None = typer.Option(None, help="Number of seeds (seed, seed+1, ...) [1]."),
    out: Path = typer.Option(Path("results"), help="Directory that receives <run-id>/."),
    run_id: str | None = typer.Option(
        None, help="Name of the run directory (default: time stamp + profile). Re-using one resumes it."
    ),
    batch_size: str | None = typer.Option(None, "--batch-size", "--batch-sizes", help=LIST_HELP),
    slate_length: str | None = typer.Option(
        None, "--slate-length", "--slate-lengths", help="Items displayed to the user (T). " + LIST_HELP
    ),
    candidates: str | None = typer.Option(
        None, help="Items the re-ranker sees per user (S >= T); default: candidate-ratio x T. " + LIST_HELP
    ),
    candidate_ratio: float | None = typer.Option(None, help="S / T when --candidates is not given [profile's]."),
    user_dim: str | None = typer.Option(None, "--user-dim", "--user-dims", help=LIST_HELP),
    item_dim: str | None = typer.Option(None, "--item-dim", "--item-dims", help=LIST_HELP),
    batches: int | None = typer.Option(None, help="Training batches per epoch."),
    epochs: int | None = typer.Option(None),
    loss: str | None = typer.Option(
        None,
        "--loss",
        "--losses",
        help="Training losses: kl (founding) | listnet | listmle | ranknet | lambdaloss | approxndcg | neuralndcg "
        "| bce. " + LIST_HELP,
    ),
    valid_slates: int | None = typer.Option(None),
    test_slates: int | None = typer.Option(None),
    slate_min: int | None = typer.Option(None, help="Variable slate lengths: each slate shows slate-min..T items."),
    initial_noise: str | None = typer.Option(
        None, help="Initial order by true utility + N(0, noise^2) (in list std units); 0 = perfect, inf = random."
    ),
    click_model: str | None = typer.Option(None, help="best (founding) | position-biased | cascade | multi-click"),
    eta: float | None = typer.Option(None, help="position-biased clicks: examination probability 1/rank^eta."),
    labels: str | None = typer.Option(None, help="clicks | graded (default: clicks; graded for --data letor)."),
    data: str | None = typer.Option(None, help="synthetic (default) | letor"),
    data_path: str | None = typer.Option(
        None, help="LETOR: a directory with train/vali/test.txt, or TRAIN,VALID,TEST."
    ),
    initial_ranker: str | None = typer.Option(None, help="LETOR: linear (fitted on train) | feature:<id>"),
    d_model: int | None = typer.Option(None, help="Model width, for every model that has one."),
    model_arg: list[str] | None = typer.Option(None, help="KEY=VALUE model option (repeatable), e.g. num_layers=4."),
    threads: int | None = typer.Option(None, help="CPU threads for torch (0: torch's default)."),
    precision: str | None = typer.Option(None, help="fp32 | tf32 (CUDA) | bf16 (autocast)  [fp32]"),
    compile_model: bool | None = typer.Option(
        None, "--compile/--no-compile", help="torch.compile each cell's model (compile time is warm-up)."
    ),
    cpu_dropout: str | None = typer.Option(
        None, help="Dropout every model trains with on CPU: torch (stock PyTorch) | bulk (rerankers/dropout.py)."
    ),
    isolation: str | None = typer.Option(None, help="process: each cell in its own process | none  [process]"),
    timeout: float | None = typer.Option(None, help="Per-cell timeout in seconds (process isolation or ray)."),
    executor: str | None = typer.Option(None, help="local | ray  [local]"),
    ray_address: str | None = typer.Option(
        None, help="Address of a running Ray cluster (e.g. 10.0.0.5:6379 or auto); default: a new local one."
    ),
    ray_cpus: int | None = typer.Option(None, help="CPUs of the local Ray cluster started when no address is given."),
    retries: int | None = typer.Option(None, help="Ray: retries of a cell whose worker or node was lost [0]."),
    force: bool = typer.Option(False, help="Re-run cells that are already recorded."),
    dry_run: bool = typer.Option(False, help="List the cells and exit."),
    baseline: str | None = typer.Option(None, help="Model the report compares the others with [mlp]."),
) -> None:
    """Train, evaluate and measure every selected model on the same data; write records and a report."""
    from bench.sweep import build_cells, load_sweep_file
    from rerankers import UnknownModelError, get_spec

    given = {
        "models": models,
        "profile": profile_name,
        "device": device,
        "seed": seed,
        "seeds": seeds,
        "batch_size": batch_size,
        "slate_length": slate_length,
        "candidates": candidates,
        "candidate_ratio": candidate_ratio,
        "user_dim": user_dim,
        "item_dim": item_dim,
        "batches": batches,
        "epochs": epochs,
        "valid_slates": valid_slates,
        "test_slates": test_slates,
        "d_model": d_model,
        "model_arg": model_arg or None,
        "threads": threads,
        "precision": precision,
        "compile": compile_model,
        "cpu_dropout": cpu_dropout,
        "isolation": isolation,
        "timeout": timeout,
        "executor": executor,
        "ray_address": ray_address,
        "ray_cpus": ray_cpus,
        "retries": retries,
        "baseline": baseline,
        "loss": loss,
        "slate_min": slate_min,
        "initial_noise": initial_noise,
        "click_model": click_model,
        "eta": eta,
        "labels": labels,
        "data": data,
        "data_path": data_path,
        "initial_ranker": initial_ranker,
    }
    try:
        settings = load_sweep_file(sweep) if sweep else {}
        settings.update({k: v for k, v in given.items() if v is not None})
        settings["device"] = resolve_device(str(settings.get("device", "auto")))
        isolation_mode = settings.get("isolation", "process")
        if isolation_mode not in ISOLATIONS:
            raise ConfigError(f"unknown isolation {isolation_mode!r} (choose from {', '.join(ISOLATIONS)})")
        cell_timeout = settings.get("timeout")
        if cell_timeout is not None and float(cell_timeout) <= 0:
            raise ConfigError(f"timeout must be positive, got {cell_timeout}")
        baseline_model = get_spec(str(settings.get("baseline", "mlp"))).name
        executor_name = settings.get("executor", "local")
        if executor_name not in EXECUTORS:
            raise ConfigError(f"unknown executor {executor_name!r} (choose from {', '.join(EXECUTORS)})")
        retry_count = int(settings.get("retries", 0))
        if retry_count < 0:
            raise ConfigError(f"retries must be >= 0, got {retry_count}")
        ray_options = {
            "address": settings.get("ray_address"),
            "retries": retry_count,
            "num_cpus": settings.get("ray_cpus"),
        }
        if executor_name == "ray":
            from bench.ray_executor import require_ray

            require_ray()
        if settings.get("data") == "letor" and "labels" not in settings:
            settings["labels"] = "graded"
        cells = build_cells(settings)
        if cells[0].workload.data == "letor":
            _prepare_letor(cells[0].workload)
    except (ConfigError, UnknownModelError) as error:
        fail(str(error))
    for cell in cells:
        _check_constructible(cell)
    profile_label = settings.get("profile", "default")
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    run_dir = out / (run_id or f"{stamp}-{profile_label}")
    if dry_run:
        _print_dry_run(cells, run_dir, force)
        return
    _execute(cells, run_dir, isolation_mode, cell_timeout, force, baseline_model, executor_name, ray_options)


def _print_dry_run(cells: list[CellConfig], run_dir: Path, force: bool) -> None:
    from tabulate import tabulate

    from bench.runner import pending_cells

    todo = {c.key() for c in pending_cells(cells, run_dir, force)}
    rows = [
        (
            c.model,
            c.train.loss,
            c.seed,
            c.workload.batch_size,
            c.workload.slate_length,
            c.workload.candidates,
            c.workload.user_dim,
            c.workload.item_dim,
            c.key(),
            "run" if c.key() in todo else "recorded",
        )
        for c in cells
    ]
    headers = ["model", "loss", "seed", "batch", "slate T", "candidates S", "user dim", "item dim", "key", "action"]
    typer.echo(tabulate(rows, headers=headers))
    typer.echo(f"{len(cells)} cells: {len(todo)} to run, {len(cells) - len(todo)} already recorded in {run_dir}")


def _execute(
    cells: list[CellConfig],
    run_dir: Path,
    isolation: str,
    timeout: float | None,
    force: bool,
    baseline: str,
    executor: str = "local",
    ray_options: dict[str, Any] | None = None,
) -> None:
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    from bench.report import write_report

    command = shlex.join(["bench", *sys.argv[1:]]) if sys.argv and "bench" in sys.argv[0] else None
    console = Console(stderr=True)
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

        def on_start(cell: CellConfig) -> None:
            w = cell.workload
            progress.update(
                overall,
                description=f"cell {cell.model} seed {cell.seed} batch {w.batch_size} T {w.slate_length} "
                f"S {w.candidates} U {w.user_dim} F {w.item_dim}",
            )
            progress.reset(current, total=cell.train.epochs, description="  data + first epoch")

        def on_epoch(epoch: int, loss: float, acc: float) -> None:
            total = progress.tasks[current].total
            progress.update(
                current,
                completed=epoch,
                description=f"  epoch {epoch}/{total:.0f} loss {loss:.4f} valid slate_acc {acc:.3f}",
            )

        def on_done(record: dict[str, Any]) -> None:
            progress.advance(overall)
            m, x, w = record["metrics"], record["measurements"], record["config"]["workload"]
            where = f"seed {record['config']['seed']} batch {w['batch_size']} T {w['slate_length']}"
            if record["status"] == "ok":
                progress.console.print(
                    f"{record['model']:<12} {where}  ok  slate_acc {m['slate_acc']:.3f}  "
                    f"train {x.get('train_samples_per_s') or 0:,.0f} samples/s  wall {x['wall_seconds']:.1f}s"
                )
            else:
                progress.console.print(f"{record['model']:<12} {where}  {record['status']}: {record['error']}")

        try:
            summary = run_cells(
                cells,
                run_dir,
                isolation,
                timeout,
                force,
                on_start,
                on_epoch,
                on_done,
                extra={"run": {"id": run_dir.name, "command": command, "executor": executor}},
                executor=executor,
                ray_options=ray_options,
            )
        except KeyboardInterrupt:
            progress.stop()
            report = write_report(run_dir, baseline) if (run_dir / "records.jsonl").exists() else None
            console.print(f"interrupted: finished cells are recorded in {run_dir}; report so far: {report}")
            raise typer.Exit(130) from None
    if summary.skipped:
        console.print(f"skipped {summary.skipped} cell(s) already recorded in {run_dir} (--force re-runs them)")
    report = write_report(run_dir, baseline)
    statuses = ", ".join(f"{n} {s}" for s, n in sorted(summary.statuses.items())) or "nothing new"
    typer.echo(f"ran {summary.ran} cell(s): {statuses}")
    typer.echo(f"records: {run_dir / 'records.jsonl'}")
    typer.echo(f"report:  {report}")
    if sum(n for s, n in summary.statuses.items() if s != "ok"):
        raise typer.Exit(1)


def _prepare_letor(workload: WorkloadConfig) -> None:
    """Parse (or find cached) every LETOR split before any cell runs: bad files stop the run here."""
    from rich.console import Console

    from bench.letor import prepare

    console = Console(stderr=True)
    sizes = prepare(workload, progress=console.print)
    console.print("LETOR queries: " + ", ".join(f"{split} {count:,}" for split, count in sizes.items()))


def _check_constructible(cell: CellConfig) -> None:
    """Catch bad model options before any cell starts, with the model's own message."""
    from rerankers import build_model

    try:
        build_model(cell.model, user_dim=cell.workload.user_dim, item_dim=cell.workload.item_dim, **cell.model_kwargs)
    except (TypeError, ValueError, AssertionError) as error:
        fail(f"model {cell.model!r} rejects its options {cell.model_kwargs}: {error}")


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
    from bench.records import RECORDS_FILE
    from bench.report import write_report

    if not (run_dir / RECORDS_FILE).is_file():
        fail(f"{run_dir} has no {RECORDS_FILE}")
    typer.echo(f"report: {write_report(run_dir, baseline)}")


@app.command()
def compare(
    run_a: Path = typer.Argument(..., help="The reference run directory."),
    run_b: Path = typer.Argument(..., help="The run to check against it."),
    threshold: float = typer.Option(0.05, help="Relative change that is flagged (0.05 = 5%)."),
    show_all: bool = typer.Option(False, "--all", help="Print every compared value, not only flagged ones."),
) -> None:
    """Per-cell deltas of every metric; exits 1 on an accuracy or speed regression beyond the threshold."""
    from tabulate import tabulate

    from bench.compare import compare_runs
    from bench.records import RECORDS_FILE

    for run_dir in (run_a, run_b):
        if not (run_dir / RECORDS_FILE).is_file():
            fail(f"{run_dir} has no {RECORDS_FILE}")
    if threshold < 0:
        fail(f"threshold must be >= 0, got {threshold}")
    result = compare_runs(run_a, run_b, threshold)
    shown = [(c, f, r) for c, f, r in result.rows if f or show_all]
    if shown:
        typer.echo(
            tabulate(
                [
                    (
                        c.cell,
                        c.name,
                        f"{c.before:.4g}",
                        f"{c.after:.4g}",
                        f"{c.relative:+.1%}",
                        "REGRESSION" if r else ("changed" if f else ""),
                    )
                    for c, f, r in shown
                ],
                headers=["cell", "value", run_a.name, run_b.name, "relative", "flag"],
            )
        )
    compared = len({c.key for c, _, _ in result.rows})
    typer.echo(
        f"compared {compared} cell(s) present in both runs at threshold {threshold:.1%}; "
        f"{sum(f for _, f, _ in result.rows)} value(s) changed beyond it"
    )
    for line in result.status_changes:
        typer.echo(f"REGRESSION status: {line}")
    for label, cells in ((f"only in {run_a}", result.only_a), (f"only in {run_b}", result.only_b)):
        for cell in cells:
            typer.echo(f"{label}: {cell}")
    if result.regressions:
        typer.echo(f"{result.regressions} regression(s)", err=True)
        raise typer.Exit(1)


def main() -> None:
    """Console entry point: usage errors become one ``error:`` line and exit code 2."""
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
