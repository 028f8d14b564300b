"""What the commands share: the one-line error, the plan of a run from the command line, the dry-run table,
numbers in progress lines, and SIGTERM handled like Ctrl-C."""

from __future__ import annotations

import inspect
import math
import signal
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NoReturn

import typer

from bench.config import CellConfig, ConfigError, RunConfig
from bench.declare import Option
from bench.executor import Executor
from bench.options import check_settings, cli_parameters


def fail(message: str) -> NoReturn:
    """One clear line on stderr and exit code 2, for any bad input."""
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(2)


def shown(value: Any, spec: str) -> str:
    """A number for a progress line; a missing or non-finite one (no judged slate, a diverged loss) is n/a."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return "n/a"
    return format(value, spec)


def with_options(
    callback: Callable[..., None], first: list[inspect.Parameter] | None = None, options: list[Option] | None = None
) -> Callable[..., None]:
    """``callback`` taking every `bench run` option (bench/options.py), or those of ``options``, as a keyword,
    after ``first``."""
    signature = inspect.Signature([*(first or []), *cli_parameters(options)])
    callback.__signature__ = signature  # type: ignore[attr-defined]
    callback.__annotations__ = {p.name: p.annotation for p in signature.parameters.values()}
    return callback


@dataclass(frozen=True)
class Planned:
    run: RunConfig
    cells: list[CellConfig]
    run_dir: Path
    executor: Executor  # built and checked: it can run this run


def command_settings(given: dict[str, Any]) -> dict[str, Any]:
    """Command-line values (None: not given) over the sweep file's, checked (a ConfigError if not)."""
    from bench.sweep import load_sweep_file, with_parts_overridden

    sweep = given.pop("sweep", None)
    settings = load_sweep_file(sweep) if sweep else {}
    return with_parts_overridden(settings, check_settings({k: v for k, v in given.items() if v is not None}))


def plan_command_line(given: dict[str, Any], label: str = "") -> Planned:
    """Command-line values (None: not given) and the sweep file -> the checked run, its cells, directory and
    executor; the data every cell reads is prepared (LETOR files parsed). Bad input fails here, before any cell."""
    from rich.console import Console

    from bench.runner import make_executor
    from bench.sweep import plan
    from bench.workloads import prepare
    from rerankers import UnknownModelError

    try:
        settings = command_settings(given)
        run_config, cells = plan(settings)
        executor = make_executor(run_config)
        prepare(cells[0].workload, say=Console(stderr=True).print)
    except (ConfigError, UnknownModelError) as error:
        fail(str(error))
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    run_dir = run_config.out / (run_config.run_id or f"{stamp}-{settings.get('profile', 'default')}{label}")
    return Planned(run_config, cells, run_dir, executor)


def print_dry_run(cells: list[CellConfig], run_dir: Path, run_config: RunConfig) -> None:
    """The cells, what the run would do with each (run, retry, recorded), and the count; nothing runs."""
    from bench.runner import pending, retried_line

    try:
        plan = pending(cells, run_dir, run_config.force, run_config.keep_failed)
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
            plan.action(c),
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
    typer.echo(plain_table(rows, headers, numeric=("seed", "batch", "slate T", "candidates S", "user dim", "item dim")))
    todo = len(plan.todo)
    typer.echo(f"{len(cells)} cells: {todo} to run, {len(cells) - todo} already recorded in {run_dir}")
    line = retried_line(plan.retried)
    if line:
        typer.echo(line)


def plain_table(rows: list[tuple[Any, ...]], headers: list[str], numeric: tuple[str, ...] = ()) -> str:
    """``rows`` under ``headers`` in aligned columns (``numeric`` ones right-aligned), in one pass over the values:
    a dry run lists every cell, 100,000 of them for ``--seeds 100000``, where tabulate's type detection per value
    took seconds."""
    texts = [[str(value) for value in row] for row in rows]
    widths = [max([len(header), *(len(row[i]) for row in texts)]) for i, header in enumerate(headers)]
    right = [header in numeric for header in headers]

    def line(values: list[str]) -> str:
        cells = (v.rjust(w) if r else v.ljust(w) for v, w, r in zip(values, widths, right, strict=True))
        return "  ".join(cells).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(headers), rule, *(line(row) for row in texts)])


_interrupted_by: list[int] = []  # the signal that interrupted the run (SIGINT or SIGTERM)


def interrupt_code() -> int:
    """The exit code of an interrupted run: 128 + the signal (130 for Ctrl-C, 143 for SIGTERM)."""
    return 128 + (_interrupted_by[-1] if _interrupted_by else signal.SIGINT)


class sigterm_as_interrupt:  # noqa: N801 - used as a context manager, like a function
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
