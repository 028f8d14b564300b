"""The ``bench`` command line: run, list, report."""

from __future__ import annotations

import json
import shlex
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import typer

from bench.config import DEVICES, CellConfig, ConfigError, WorkloadConfig, profile, validate, with_overrides
from bench.runner import ISOLATIONS, run_cells

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


def _parse_value(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def resolve_device(name: str) -> str:
    import torch

    if name not in DEVICES:
        fail(f"unknown device {name!r} (choose from {', '.join(DEVICES)})")
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        fail("--device cuda was requested but no CUDA GPU is available (use --device cpu or auto)")
    return name


def model_options_for(model: str, options: dict[str, Any]) -> dict[str, Any]:
    from rerankers import get_spec

    accepted = get_spec(model).options()
    return {k: v for k, v in options.items() if k in accepted}


def build_cells(models: list[str], base: CellConfig, options: dict[str, Any], explicit: set[str]) -> list[CellConfig]:
    """One cell per model; each model gets the options it accepts."""
    from rerankers import get_spec

    for name in explicit:
        if not any(name in get_spec(m).options() for m in models):
            fail(f"no selected model takes the option {name!r}")
    cells = []
    for model in models:
        cell = CellConfig.from_dict({**base.to_dict(), "model": model})
        cells.append(CellConfig(**{**cell.__dict__, "model_kwargs": model_options_for(model, options)}))
    return cells


@app.command()
def run(
    models: str = typer.Option("all", help="'all', a comma list of names, or glob patterns (prm*)."),
    profile_name: str = typer.Option("default", "--profile", help="seed | default | smoke"),
    device: str = typer.Option("auto", help="auto | cpu | cuda"),
    seed: int = typer.Option(0, help="Seed of the data, the hidden value model and the model init."),
    out: Path = typer.Option(Path("results"), help="Directory that receives <run-id>/."),
    run_id: str | None = typer.Option(
        None, help="Name of the run directory (default: time stamp + profile). Re-using one resumes it."
    ),
    batch_size: int | None = typer.Option(None, help="Training and serving batch size."),
    batches: int | None = typer.Option(None, help="Training batches per epoch."),
    epochs: int | None = typer.Option(None),
    loss: str | None = typer.Option(
        None,
        help="Training loss: kl (founding) | listnet | listmle | ranknet | lambdaloss | approxndcg | neuralndcg | bce",
    ),
    slate_length: int | None = typer.Option(None, help="Items displayed to the user (T)."),
    candidates: int | None = typer.Option(None, help="Items the re-ranker sees per user (S >= T)."),
    user_dim: int | None = typer.Option(None),
    item_dim: int | None = typer.Option(None),
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
    model_arg: list[str] = typer.Option([], help="KEY=VALUE model option (repeatable), e.g. num_layers=4."),
    threads: int = typer.Option(0, help="CPU threads for torch (0: torch's default)."),
    isolation: str = typer.Option("process", help="process: each cell in its own process | none"),
    baseline: str = typer.Option("mlp", help="Model the report compares the others with."),
) -> None:
    """Train, evaluate and measure every selected model on the same data; write records and a report."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from bench.report import write_report
    from rerankers import UnknownModelError, list_models

    try:
        selected = list_models(models)
        settings = profile(profile_name)
        if isolation not in ISOLATIONS:
            raise ConfigError(f"unknown isolation {isolation!r} (choose from {', '.join(ISOLATIONS)})")
        options = dict(settings.pop("model_kwargs", {}))
        explicit: dict[str, Any] = {}
        if d_model is not None:
            explicit["d_model"] = d_model
        for item in model_arg:
            key, sep, value = item.partition("=")
            if not sep or not key:
                raise ConfigError(f"--model-arg expects KEY=VALUE, got {item!r}")
            explicit[key.strip()] = _parse_value(value.strip())
        options.update(explicit)
        base = with_overrides(
            CellConfig(model=selected[0], **settings),
            batch_size=batch_size,
            batches=batches,
            epochs=epochs,
            loss=loss,
            slate_length=slate_length,
            candidates=candidates,
            user_dim=user_dim,
            item_dim=item_dim,
            valid_slates=valid_slates,
            test_slates=test_slates,
            slate_min=slate_min,
            initial_noise=_noise_level(initial_noise),
            click_model=click_model,
            eta=eta,
            labels=labels or ("graded" if data == "letor" else None),
            data=data,
            data_path=data_path,
            initial_ranker=initial_ranker,
            seed=seed,
            device=resolve_device(device),
            threads=threads,
            model_kwargs=options,
        )
        validate(base)
        if base.workload.data == "letor":
            _prepare_letor(base.workload)
    except (ConfigError, UnknownModelError) as error:
        fail(str(error))
    cells = build_cells(selected, base, options, set(explicit))
    for cell in cells:
        _check_constructible(cell)

    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    run_dir = out / (run_id or f"{stamp}-{profile_name}")
    command = shlex.join(["bench", *sys.argv[1:]]) if sys.argv and "bench" in sys.argv[0] else None
    console = Console(stderr=True)
    failures = 0
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    ) as progress:
        overall = progress.add_task("cells", total=len(cells))
        current = progress.add_task("", total=base.train.epochs)

        def on_start(cell: CellConfig) -> None:
            progress.reset(current, total=cell.train.epochs)
            progress.update(current, description=f"{cell.model}: data + first epoch")

        def on_epoch(epoch: int, loss: float, acc: float) -> None:
            progress.update(
                current,
                completed=epoch,
                description=f"epoch {epoch}/{base.train.epochs} loss {loss:.4f} valid slate_acc {acc:.3f}",
            )

        def on_done(record: dict[str, Any]) -> None:
            nonlocal failures
            progress.advance(overall)
            m, x = record["metrics"], record["measurements"]
            if record["status"] == "ok":
                progress.console.print(
                    f"{record['model']:<12} ok  slate_acc {m['slate_acc']:.3f}  "
                    f"train {x.get('train_samples_per_s') or 0:,.0f} samples/s  "
                    f"wall {x['wall_seconds']:.1f}s"
                )
            else:
                failures += 1
                progress.console.print(f"{record['model']:<12} {record['status']}: {record['error']}")

        try:
            ran, skipped = run_cells(
                cells,
                run_dir,
                isolation,
                on_start,
                on_epoch,
                on_done,
                extra={"run": {"id": run_dir.name, "command": command}},
            )
        except KeyboardInterrupt:
            console.print("interrupted: finished cells are recorded")
            write_report(run_dir, baseline)
            raise typer.Exit(130) from None
    if skipped:
        console.print(f"skipped {skipped} cell(s) already recorded in {run_dir}")
    report = write_report(run_dir, baseline)
    typer.echo(f"records: {run_dir / 'records.jsonl'}")
    typer.echo(f"report:  {report}")
    if failures:
        raise typer.Exit(1)


def _noise_level(text: str | None) -> float | None:
    """``--initial-noise``: a number >= 0, or inf (stored as None: the random founding order)."""
    if text is None:
        return None
    try:
        value = float(text)
    except ValueError:
        raise ConfigError(f"initial-noise must be a number or inf, got {text!r}") from None
    return None if value == float("inf") else value


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
        options = model_options_for(name, settings.get("model_kwargs", {}))
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
