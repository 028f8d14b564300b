"""What a run shows while its cells run: rich bars on a terminal; one unwrapped line per cell when the output is a
file or a pipe (CI logs, ``| tee``), with ``[k/N]``, elapsed time and an estimate of the rest."""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO

from rich.console import Console

from bench.commands.common import shown
from bench.config import CellConfig
from bench.executor import Progress as CellProgress
from bench.tables import CONTENDED_MARK, compact_value

NOTHING_TRAINED = "–"  # the training speed of a model that trains nothing


def setup_line(cells: list[CellConfig], to_run: int) -> str:
    """The device and threads the cells run with, said once before the first cell."""
    devices = sorted({c.device for c in cells})
    threads = sorted({c.threads for c in cells})
    shown_threads = ", ".join("torch's default" if t == 0 else str(t) for t in threads)
    return f"device {', '.join(devices)}; torch threads per cell: {shown_threads}; {to_run} cell(s) to run"


def cell_line(record: dict[str, Any]) -> str:
    """One finished cell: what it was, its status, accuracy, training speed (– when it trains nothing; ! when it
    ran contended) and wall time."""
    m, x, config = record["metrics"], record["measurements"], record["config"]
    w = config["workload"]
    where = f"{record['model']:<12} seed {config['seed']} batch {w['batch_size']} T {w['slate_length']}"
    if record["status"] != "ok":
        error = str(record.get("error") or "").strip().splitlines()
        return f"{where}  {record['status']}: {error[-1] if error else ''}"
    mark = CONTENDED_MARK if (record.get("conditions") or {}).get("contended") else ""
    speed = x.get("train_samples_per_s")
    train = f"{compact_value(speed)}/s{mark}" if isinstance(speed, (int, float)) and speed > 0 else NOTHING_TRAINED
    return (
        f"{where}  ok  slate_acc {shown(m.get('slate_acc'), '.3f')}  train {train}  "
        f"wall {shown(x.get('wall_seconds'), '.1f')}s"
    )


def clock(seconds: float) -> str:
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


class CellLines:
    """One line per finished cell on ``stream``, never wrapped: ``[k/N] cell ... elapsed 1:02 ETA 3:10``."""

    def __init__(self, total: int, stream: TextIO | None = None) -> None:
        self.total, self.done = total, 0
        self.stream = stream or sys.stderr
        self.started = time.monotonic()

    def __enter__(self) -> CellLines:
        return self

    def __exit__(self, *exc: Any) -> None:
        return None

    def stop(self) -> None:
        return None

    def say(self, line: str) -> None:
        print(line, file=self.stream, flush=True)

    def on_progress(self, event: CellProgress) -> None:
        return None

    def on_done(self, record: dict[str, Any]) -> None:
        self.done += 1
        elapsed = time.monotonic() - self.started
        left = elapsed / self.done * (self.total - self.done) if self.done < self.total else 0.0
        self.say(f"[{self.done}/{self.total}] {cell_line(record)}  elapsed {clock(elapsed)} ETA {clock(left)}")


class ProgressBars:
    """On a terminal: two bars (cells done; the current cell's epochs) and one line per finished cell."""

    def __init__(self, console: Console, cells: int) -> None:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
        self.bars = Progress(*columns, TimeRemainingColumn(), console=console, transient=True)
        self.overall = self.bars.add_task("cells", total=cells)
        self.current = self.bars.add_task("", total=1)

    def __enter__(self) -> ProgressBars:
        self.bars.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.bars.__exit__(*exc)

    def stop(self) -> None:
        self.bars.stop()

    def say(self, line: str) -> None:
        self.bars.console.print(line, highlight=False)

    def on_progress(self, event: CellProgress) -> None:
        cell, w = event.cell, event.cell.workload
        if event.epoch is None:
            where = f"batch {w.batch_size} T {w.slate_length} S {w.candidates} U {w.user_dim} F {w.item_dim}"
            self.bars.update(self.overall, description=f"cell {cell.model} seed {cell.seed} {where}")
            self.bars.reset(self.current, total=cell.train.epochs, description="  data + first epoch")
            return
        self.bars.update(
            self.current,
            completed=event.epoch,
            description=f"  epoch {event.epoch}/{cell.train.epochs} loss {shown(event.loss, '.4f')} "
            f"valid slate_acc {shown(event.valid_slate_acc, '.3f')}",
        )

    def on_done(self, record: dict[str, Any]) -> None:
        self.bars.advance(self.overall)
        self.say(cell_line(record))


def display_for(console: Console, total: int) -> CellLines | ProgressBars:
    """Bars on a terminal, lines elsewhere."""
    return ProgressBars(console, total) if console.is_terminal else CellLines(total)
