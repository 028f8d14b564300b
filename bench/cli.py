"""The ``bench`` command line: a typer app holding every command of bench/commands/ (one module each: run, tune,
list, report, compare, ab), and the console entry point that turns usage errors into one ``error:`` line."""

from __future__ import annotations

import sys
from typing import Any, NoReturn

import typer

from bench.commands import commands

app = typer.Typer(
    add_completion=False,
    pretty_exceptions_enable=False,
    no_args_is_help=True,
    help="Benchmark neural re-rankers: accuracy, speed and memory on the same data and hardware.",
)
for command in commands():
    app.command(command.name)(command.callback)


def _flags_show_no_type() -> None:
    """A flag takes no value, so its help shows no type: typer's rich help would print `--help <bool>`."""
    from typer import core

    option = getattr(core, "TyperOption", None)
    shown = getattr(option, "display_type_rich", None)
    if shown is None:  # a typer that prints no types
        return

    def display_type_rich(self: Any, ctx: Any) -> str | None:
        return None if getattr(self, "is_flag", False) else shown(self, ctx)

    option.display_type_rich = display_type_rich


_flags_show_no_type()


def entry() -> NoReturn:
    """The `bench` command and `python -m bench`: ``main``, then the process ends as soon as its output is out."""
    try:
        main()
    except SystemExit as stop:
        code = stop.code if isinstance(stop.code, int) else int(stop.code is not None)
        if stop.code is not None and not isinstance(stop.code, int):
            print(stop.code, file=sys.stderr)
        exit_now(code)
    exit_now(0)


def main() -> None:
    """The command line, callable in a process that goes on (raises SystemExit with the exit code): usage errors
    become one ``error:`` line and exit code 2."""
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


def exit_now(code: int) -> NoReturn:
    """End the process with ``code`` as soon as its output is out, without the interpreter's teardown.

    By now every record is fsynced, the report closed, and each executor has stopped what it started (cell
    processes joined, Ray shut down; the fork server dies with this process: bench/forkserver_guard.py). What is
    left is teardown: atexit handlers and the freeing of torch's and the other libraries' modules, which on a loaded
    2-core machine kept a finished run alive 20 s and more after its summary."""
    import logging
    import os

    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe or stream: nothing more can be said
            pass
    os._exit(code)


if __name__ == "__main__":
    entry()
