"""Runs one cell in this (fresh) process: ``python -m bench.worker < cell.json``.

Writes JSON lines to stdout: ``{"event": "epoch", ...}`` while training, then one
``{"event": "record", "record": {...}}``. Peak RSS is then this cell's own.
"""

from __future__ import annotations

import json
import sys

from bench.cell import run_cell
from bench.config import CellConfig
from bench.parent_death import die_with_parent


def _emit(message: dict) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


def main() -> None:
    die_with_parent()
    cell = CellConfig.from_dict(json.loads(sys.stdin.read()))
    record = run_cell(
        cell,
        on_epoch=lambda epoch, loss, acc: _emit(
            {"event": "epoch", "epoch": epoch, "loss": loss, "valid_slate_acc": acc}
        ),
    )
    _emit({"event": "record", "record": record})


def run_forked(connection, cell_dict: dict, environment: dict[str, str], log_path: str) -> None:
    """A cell in a child of the pre-started server (bench/executor.py): torch and the registry are already imported.

    The server started with the environment of the run's first cell; this cell gets the driver's environment of
    now (plugins, paths), its own session (a Ctrl-C reaches only the driver) and its output in ``log_path``.
    """
    import os

    os.setsid()
    die_with_parent()
    try:
        log = os.open(log_path, os.O_WRONLY | os.O_APPEND)
    except FileNotFoundError:  # the driver was interrupted while this process started: nobody waits for it
        os._exit(1)
    os.dup2(log, 1)
    os.dup2(log, 2)
    os.environ.clear()
    os.environ.update(environment)
    for entry in reversed(environment.get("PYTHONPATH", "").split(os.pathsep)):
        if entry and entry not in sys.path:
            sys.path.insert(0, entry)
    cell = CellConfig.from_dict(cell_dict)

    def on_epoch(epoch: int, loss: float, acc: float) -> None:
        connection.send({"event": "epoch", "epoch": epoch, "loss": loss, "valid_slate_acc": acc})

    connection.send({"event": "record", "record": run_cell(cell, on_epoch=on_epoch)})
    connection.close()


if __name__ == "__main__":
    main()
