"""Runs cells one after another, each in its own process by default, appending records."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.cell import new_record, run_cell
from bench.config import CellConfig
from bench.records import RECORDS_FILE, append_record, load_records

ISOLATIONS = ("process", "none")
EpochCallback = Callable[[int, float, float], None]


def _run_in_subprocess(cell: CellConfig, on_epoch: EpochCallback) -> dict[str, Any]:
    with tempfile.TemporaryFile(mode="w+") as stderr:
        worker = subprocess.Popen(
            [sys.executable, "-m", "bench.worker"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
        )
        try:
            assert worker.stdin is not None and worker.stdout is not None
            worker.stdin.write(json.dumps(cell.to_dict()))
            worker.stdin.close()
            record = None
            for line in worker.stdout:
                try:
                    message = json.loads(line)
                except json.JSONDecodeError:
                    continue  # stray output from a library
                if message.get("event") == "epoch":
                    on_epoch(message["epoch"], message["loss"], message["valid_slate_acc"])
                elif message.get("event") == "record":
                    record = message["record"]
            code = worker.wait()
        finally:
            if worker.poll() is None:
                worker.kill()
                worker.wait()
        if record is not None:
            return record
        stderr.seek(0)
        tail = stderr.read()[-2000:].strip()
        cause = f"killed by signal {-code}" if code < 0 else f"exited with code {code}"
        status = "oom" if code == -9 else "failed"  # the kernel's OOM killer sends SIGKILL
        return new_record(cell, status, f"worker {cause}: {tail}")


def run_cells(
    cells: list[CellConfig],
    run_dir: Path,
    isolation: str = "process",
    on_start: Callable[[CellConfig], None] = lambda cell: None,
    on_epoch: EpochCallback = lambda epoch, loss, acc: None,
    on_done: Callable[[dict[str, Any]], None] = lambda record: None,
    extra: dict[str, Any] | None = None,
) -> tuple[int, int]:
    """Run every cell not already recorded in ``run_dir``; returns (ran, skipped)."""
    path = run_dir / RECORDS_FILE
    done = {r["key"] for r in load_records(path)} if path.exists() else set()
    todo = [c for c in cells if c.key() not in done]
    for cell in todo:
        on_start(cell)
        if isolation == "process":
            record = _run_in_subprocess(cell, on_epoch)
        else:
            record = run_cell(cell, on_epoch)
        record.update(extra or {})
        append_record(path, record)
        on_done(record)
    return len(todo), len(cells) - len(todo)
