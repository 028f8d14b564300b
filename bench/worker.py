"""Runs one cell in this (fresh) process: ``python -m bench.worker < cell.json``.

Writes JSON lines to stdout: ``{"event": "epoch", ...}`` while training, then one
``{"event": "record", "record": {...}}``. Peak RSS is then this cell's own.
"""

from __future__ import annotations

import json
import sys

from bench.cell import run_cell
from bench.config import CellConfig


def _emit(message: dict) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


def _die_with_parent() -> None:
    """On Linux, ask the kernel to kill this worker if the driver dies (e.g. kill -9)."""
    if sys.platform.startswith("linux"):
        import ctypes
        import os
        import signal

        parent = os.getppid()
        try:
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        except OSError:
            return
        if os.getppid() != parent:  # the driver died before prctl took effect
            os._exit(1)


def main() -> None:
    _die_with_parent()
    cell = CellConfig.from_dict(json.loads(sys.stdin.read()))
    record = run_cell(
        cell,
        on_epoch=lambda epoch, loss, acc: _emit(
            {"event": "epoch", "epoch": epoch, "loss": loss, "valid_slate_acc": acc}
        ),
    )
    _emit({"event": "record", "record": record})


if __name__ == "__main__":
    main()
