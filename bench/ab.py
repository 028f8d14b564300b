"""`bench ab`: is side B faster or slower than side A on the same cells? (docs/speed-verdicts.md)

Flow: options -> sides (revisions exported; a revision's options checked by its own code in a plan process)
-> pairs: for each pair and cell, one fresh process per side, back to back, their order (AB or BA) from a coin
seeded by (order seed, pair, cell) -> records (RUN/ab.jsonl: append-only, fsynced, under the run directory's
lock; a killed A/B resumes without repeating finished pairs) -> verdicts (bench/ab_verdict.py) -> RUN/ab.md.
The repetition goes where the variance lives: on these machines speed changes level between processes and every
few seconds, which one process's samples cannot see and a pair's ratio cancels.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import tempfile
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from bench.ab_sides import Outcome, Side, callgrind_counts, export, parse_env, resolve, run_process
from bench.ab_verdict import INCONCLUSIVE, SPEED_VALUES, PairValue, judge
from bench.catalog import lookup
from bench.config import MAX_SEED, RunConfig
from bench.declare import check_fields, option
from bench.errors import ConfigError
from bench.records import RECORDS_FILE, append_record, cpu_name, load_records
from bench.stats import SIGNIFICANCE, fewest_pairs, timing_summary
from bench.sweep import build_cells, checked_cells, run_settings

AB_FILE = "ab.jsonl"
SCHEMA = 1  # of ab.jsonl's lines (docs/speed-verdicts.md)
KINDS = ("plan", "process", "instructions")
AB = "A/B"  # the help panel of bench ab's own options
INSTRUCTION_STEPS, INSTRUCTION_REQUESTS = 3, 20  # what one valgrind process counts


def _below_one(threshold: float) -> None:
    if threshold >= 1:
        raise ConfigError(f"threshold must be below 1 (a relative change), got {threshold:g}")


@dataclass(frozen=True)
class AbConfig:
    """`bench ab`'s own options (the cell options are `bench run`'s, bench/options.py)."""

    a: str | None = option(None, "Side A: a git revision (default: the working tree bench runs from).", AB)
    b: str | None = option(None, "Side B: a git revision (default: the working tree bench runs from).", AB)
    a_args: str = option("", 'Side A: extra cell options of `bench run`, e.g. "--cpu-dropout torch".', AB)
    b_args: str = option("", 'Side B: extra cell options of `bench run`, e.g. "--cpu-dropout bulk".', AB)
    a_env: list[str] = option(
        help="Side A: KEY=VALUE in its processes' environment (repeatable).", panel=AB, factory=list
    )
    b_env: list[str] = option(
        help="Side B: KEY=VALUE in its processes' environment (repeatable).", panel=AB, factory=list
    )
    repo: Path | None = option(None, "The git repository of --a/--b (default: the current directory's).", AB)
    pairs: int = option(10, "Pairs of processes per cell (one per side, back to back).", AB, minimum=1, maximum=10_000)
    max_pairs: int | None = option(
        None,
        "Add pairs to cells with an INCONCLUSIVE value, up to this many in all (not given: no more than --pairs).",
        AB,
        minimum=1,
        maximum=10_000,
    )
    threshold: float = option(
        0.10,
        "Change a verdict speaks about: beyond it REGRESSION/IMPROVEMENT, inside it SAME.",
        AB,
        minimum=0.001,
        check=_below_one,
    )
    order_seed: int = option(0, "Seed of the coin that orders each pair (AB or BA).", AB, minimum=0, maximum=MAX_SEED)
    train_blocks: int = option(10, "Timed blocks of training steps per process.", AB, minimum=1, maximum=10_000)
    instructions: bool = option(
        False, "Also count instructions under valgrind: a few training steps and batch-1 requests.", AB
    )
    instruction_runs: int = option(2, "Valgrind processes per side and cell (--instructions).", AB, minimum=1)

    def __post_init__(self) -> None:
        check_fields(self)
        if self.max_pairs is not None and self.max_pairs < self.pairs:
            raise ConfigError(f"max-pairs ({self.max_pairs}) must be at least --pairs ({self.pairs})")
        if self.instructions and shutil.which("valgrind") is None:
            raise ConfigError("--instructions needs valgrind on PATH (e.g. apt-get install valgrind)")


@dataclass
class AbPlan:
    config: AbConfig
    sides: dict[str, Side]
    run_dir: Path
    timeout: float | None = None
    command: str | None = None
    cells: list[dict[str, dict[str, Any]]] = field(default_factory=list)  # per cell: each side's model, key, config
    session: str = field(default_factory=lambda: uuid.uuid4().hex[:12])  # this invocation, in its records

    def identity(self) -> dict[str, Any]:
        """What a resumed A/B must share with the one it continues."""
        return {
            "sides": {name: side.identity() for name, side in self.sides.items()},
            "cells": [[cell[name]["key"] for name in self.sides] for cell in self.cells],
            "train_blocks": self.config.train_blocks,
            "order_seed": self.config.order_seed,
        }

    def label(self, cell: int) -> str:
        return cell_label(self.cells[cell])


def make_plan(
    config: AbConfig, common: dict[str, Any], extra: dict[str, dict[str, Any]], run: RunConfig, command: str | None
) -> AbPlan:
    """The A/B's plan: each side's settings (the checked cell ``common`` settings, then the side's ``extra``, as
    `bench run` takes them), its cells checked by this code, its revision found. Bad input raises a ConfigError
    before anything runs."""
    sides = {}
    for name in ("A", "B"):
        low = name.lower()
        settings = run_settings({**common, **extra[name]})
        if config.instructions and settings["device"] != "cpu":
            raise ConfigError("--instructions counts CPU instructions under valgrind: it needs --device cpu")
        env = parse_env(getattr(config, f"{low}_env"), f"--{low}-env")
        sides[name] = Side(name, getattr(config, low), getattr(config, f"{low}_args"), env, settings)
        checked_cells(settings)
        resolve(sides[name], config.repo or Path.cwd())
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    return AbPlan(config, sides, run.out / (run.run_id or f"{stamp}-ab"), run.timeout, command)


def cell_label(sides: dict[str, dict[str, Any]]) -> str:
    """A cell's name in lines and tables: its model, or both when the sides' options give different models."""
    a, b = sides["A"]["model"], sides["B"]["model"]
    return a if a == b else f"{a} / {b}"


class SideFailed(Exception):
    """A side's process failed; everything recorded before it is kept."""

    def __init__(self, side: Side, where: str, error: str, tail: str = ""):
        super().__init__(f"side {side.describe()} failed {where}: {error}")
        self.side, self.tail = side, tail


def order(seed: int, pair: int, cell: int, stream: int = 0) -> tuple[str, str]:
    """Which side runs first in a pair: a fair coin seeded by (seed, pair, cell), so that the order of any pair
    is the same however the A/B was interrupted and resumed (``stream`` 1: the instruction runs' own coins)."""
    return ("A", "B") if np.random.default_rng([seed, pair, cell, stream]).random() < 0.5 else ("B", "A")


def _problem(value: Any) -> str | None:
    if not isinstance(value, dict) or value.get("kind") not in KINDS:
        return "not an A/B record"
    return None


@dataclass
class AbState:
    """What RUN/ab.jsonl holds: the plans of every invocation, and every finished process."""

    records: list[dict[str, Any]]

    @classmethod
    def read(cls, run_dir: Path) -> AbState:
        path = run_dir / AB_FILE
        return cls(load_records(path, _problem) if path.is_file() else [])

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [r for r in self.records if r["kind"] == kind]

    def complete_pairs(self, cell: int) -> dict[int, dict[str, dict[str, Any]]]:
        """pair -> {side: its process record}, for the pairs whose two processes finished ok in one session
        (a pair cut in half by an interrupt is run again whole; the later session wins)."""
        halves: dict[tuple[int, str], dict[str, dict[str, Any]]] = {}
        for r in self.of("process"):
            if r["cell"] == cell and r["status"] == "ok":
                halves.setdefault((r["pair"], r["session"]), {})[r["side"]] = r
        return {pair: sides for (pair, _), sides in halves.items() if len(sides) == 2}

    def unfinished(self) -> list[dict[str, Any]]:
        """Process records that belong to no complete pair (an interrupted pair's first half, a failure)."""
        used = {
            id(r)
            for c in {r["cell"] for r in self.of("process")}
            for s in self.complete_pairs(c).values()
            for r in s.values()
        }
        return [r for r in self.of("process") if id(r) not in used]

    def calibration(self, cell: int) -> dict[str, int | None]:
        """Steps and calls per block: those of the cell's first process that calibrated them, for all others."""
        for r in self.of("process"):
            if r["cell"] == cell and r["status"] == "ok":
                return {k: r["work"].get(k) for k in ("steps_per_block", "calls_per_block")}
        return {"steps_per_block": None, "calls_per_block": None}


def check_resumable(state: AbState, plan: AbPlan) -> None:
    """An A/B directory resumes only the A/B it holds: same sides, cells, work and order seed."""
    plans = state.of("plan")
    if not plans:
        return
    before, now = plans[0]["identity"], json_roundtrip(plan.identity())
    differ = [key for key in now if before.get(key) != now[key]]
    if differ:
        raise ConfigError(
            f"{plan.run_dir} holds another A/B (its {', '.join(differ)} differ from this command's); "
            "choose another --run-id, or repeat that A/B's command to continue it"
        )


def json_roundtrip(value: Any) -> Any:
    return json.loads(json.dumps(value))


def environment() -> dict[str, Any]:
    import torch

    return {
        "cpu": cpu_name(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def plan_cells(plan: AbPlan) -> None:
    """Each side's cells, as its own code builds them from its settings (a process per side, nothing trained;
    the working tree with the driver's environment is the driver's own code, which builds them here).
    Both sides must have the same number of cells: cell i of A is compared with cell i of B."""
    per_side = {}
    for name, side in plan.sides.items():
        if side.revision is None and not side.env:
            cells = build_cells(side.settings)
            per_side[name] = [{"model": c.model, "key": c.key(), "config": c.to_dict()} for c in cells]
            continue
        outcome = run_process(side, {"mode": "plan", "settings": side.settings}, plan.timeout)
        if outcome.result["status"] != "ok":
            raise ConfigError(f"side {side.describe()} rejects its options: {outcome.result['error']}")
        per_side[name] = outcome.result["cells"]
    if len(per_side["A"]) != len(per_side["B"]):
        counts = ", ".join(f"{name} {len(cells)}" for name, cells in per_side.items())
        raise ConfigError(f"the sides have different numbers of cells ({counts}): give both the same models and axes")
    plan.cells = [{"A": a, "B": b} for a, b in zip(per_side["A"], per_side["B"], strict=True)]


def plan_record(plan: AbPlan) -> dict[str, Any]:
    config = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(plan.config).items()}
    return {
        "kind": "plan",
        "schema": SCHEMA,
        "session": plan.session,
        "identity": json_roundtrip(plan.identity()),
        "sides": {
            name: {"describe": side.describe(), **side.identity(), "given": side.revision, "settings": side.settings}
            for name, side in plan.sides.items()
        },
        "cells": plan.cells,
        "config": config,
        "environment": environment(),
        "command": plan.command,
        "started_at": datetime.now(UTC).isoformat(),
    }


def process_record(plan: AbPlan, outcome: Outcome, where: dict[str, Any]) -> dict[str, Any]:
    """A timed process as ab.jsonl keeps it: its samples summarised like a cell's timings, each speed value
    (the process's median), the deterministic counts, the work it did and its conditions."""
    result = outcome.result
    timings = {
        name: timing_summary(result[name])
        for name in ("train_samples_per_s", "infer_samples_per_s", "latency_b1_ms")
        if result.get(name)
    }
    values = {}
    for name in SPEED_VALUES:
        metric = lookup(name)
        samples = (timings.get(metric.timing) or {}).get("samples")
        if samples:
            values[name] = float(np.percentile(samples, 100 * metric.quantile))
    return {
        "kind": "process",
        "session": plan.session,
        **where,
        "status": result["status"],
        "error": result.get("error"),
        "log_tail": result.get("log_tail"),
        "cell_key": result.get("cell_key"),
        "values": values,
        "timings": timings,
        "deterministic": result.get("deterministic") or {},
        "work": {k: result.get(k) for k in ("steps_per_block", "calls_per_block", "torch_threads")},
        "bench_path": result.get("bench_path"),
        "conditions": outcome.conditions,
        "started_at": outcome.started_at,
        "finished_at": datetime.now(UTC).isoformat(),
        "wall_seconds": outcome.wall_seconds,
    }


Say = Callable[[str], None]


def run_pair(plan: AbPlan, state: AbState, pair: int, cell: int, say: Say) -> None:
    """One pair of one cell: a process of each side, back to back, in the coin's order; each recorded at once."""
    first, second = order(plan.config.order_seed, pair, cell)
    job = {"mode": "time", "cell": cell, "train_blocks": plan.config.train_blocks}
    done = {}
    for position, name in enumerate((first, second)):
        side = plan.sides[name]
        work = {**job, **state.calibration(cell), "settings": side.settings}  # the first pair's second process too
        outcome = run_process(side, work, plan.timeout)
        where = {"pair": pair, "cell": cell, "side": name, "position": position, "order": first + second}
        record = process_record(plan, outcome, where)
        _check_tree(side, record)
        append_record(plan.run_dir / AB_FILE, record)
        state.records.append(record)
        if record["status"] != "ok":
            raise SideFailed(
                side, f"in pair {pair}, cell {plan.label(cell)}", record["error"], record["log_tail"] or ""
            )
        done[name] = record
    say(_pair_line(plan, pair, cell, done))


def _check_tree(side: Side, record: dict[str, Any]) -> None:
    """A side's process must have imported the side's own bench (not, say, an installed copy)."""
    path = record.get("bench_path")
    if record["status"] == "ok" and path and not Path(path).is_relative_to(side.tree.resolve()):
        record.update(status="failed", error=f"it imported bench from {path}, not from the side's tree {side.tree}")


def _pair_line(plan: AbPlan, pair: int, cell: int, done: dict[str, dict[str, Any]]) -> str:
    a, b = done["A"]["values"], done["B"]["values"]
    ratios = [f"{lookup(n).short or n} B/A {b[n] / a[n]:.3f}" for n in SPEED_VALUES if a.get(n) and b.get(n)]
    contended = any(done[s]["conditions"].get("contended") for s in done)
    order_text = done["A"]["order"]
    return (
        f"pair {pair:>3} {plan.label(cell):<14} {order_text}  "
        + "  ".join(ratios)
        + ("  contended" if contended else "")
    )


def pair_values(state: AbState, cells: int) -> dict[tuple[int, str], list[PairValue]]:
    """Every complete pair's values, per (cell, speed value)."""
    values: dict[tuple[int, str], list[PairValue]] = {}
    for cell in range(cells):
        for pair, sides in sorted(state.complete_pairs(cell).items()):
            contended = any(bool(r["conditions"].get("contended")) for r in sides.values())
            for name in SPEED_VALUES:
                a, b = sides["A"]["values"].get(name), sides["B"]["values"].get(name)
                if a and b:
                    values.setdefault((cell, name), []).append(PairValue(pair, a, b, contended))
    return values


def run_pairs(plan: AbPlan, state: AbState, say: Say) -> None:
    """--pairs pairs of every cell, then more pairs (up to --max-pairs) for cells with an INCONCLUSIVE value,
    a half of --pairs at a time. Pairs already recorded are not run again."""
    target, limit = plan.config.pairs, plan.config.max_pairs or plan.config.pairs
    todo = set(range(len(plan.cells)))
    while True:
        for pair in range(1, target + 1):
            for cell in sorted(todo):
                if pair not in state.complete_pairs(cell):
                    run_pair(plan, state, pair, cell, say)
        judgements = judge(pair_values(state, len(plan.cells)), plan.config.threshold)
        todo = {j.cell for j in judgements if j.verdict == INCONCLUSIVE}
        if not todo or target >= limit:
            return
        target = min(limit, target + max(1, plan.config.pairs // 2))
        say(f"{len(todo)} cell(s) with an INCONCLUSIVE value: up to {target} pairs for them")


def run_instruction_counts(plan: AbPlan, state: AbState, say: Say) -> None:
    """--instruction-runs valgrind processes per side and cell, which side goes first drawn as for pairs."""
    job = {"mode": "instructions", "instruction_steps": INSTRUCTION_STEPS, "instruction_requests": INSTRUCTION_REQUESTS}
    for cell in range(len(plan.cells)):
        for run in range(1, plan.config.instruction_runs + 1):
            for name in order(plan.config.order_seed, run, cell, stream=1):
                if any(
                    r["cell"] == cell and r["run"] == run and r["side"] == name and r["status"] == "ok"
                    for r in state.of("instructions")
                ):
                    continue
                side = plan.sides[name]
                with tempfile.TemporaryDirectory(prefix="bench-ab-callgrind-") as out:
                    outcome = run_process(side, {**job, "cell": cell, "settings": side.settings}, None, Path(out))
                    counts = callgrind_counts(Path(out))
                record = instruction_record(plan, outcome, counts, {"cell": cell, "run": run, "side": name})
                append_record(plan.run_dir / AB_FILE, record)
                state.records.append(record)
                if record["status"] != "ok":
                    raise SideFailed(side, f"counting instructions of cell {plan.label(cell)}", record["error"])
                say(
                    f"instructions {plan.label(cell):<14} side {name} run {run}: "
                    + ", ".join(f"{region} {n / record['per'][region]:,.0f}/call" for region, n in counts.items())
                )


def instruction_record(plan: AbPlan, outcome: Outcome, counts: dict[str, int], where: dict) -> dict[str, Any]:
    result = outcome.result
    per = result.get("counted") or {}
    status, error = result["status"], result.get("error")
    if status == "ok" and set(counts) != set(per):
        status, error = "failed", f"callgrind wrote counts for {sorted(counts)}, expected {sorted(per)}"
    return {
        "kind": "instructions",
        "session": plan.session,
        **where,
        "status": status,
        "error": error,
        "counts": counts,
        "per": per,
        "cell_key": result.get("cell_key"),
        "started_at": outcome.started_at,
        "wall_seconds": outcome.wall_seconds,
    }


def run_ab(plan: AbPlan, repo: Path, say: Say) -> AbState:
    """Prepare the sides (resolved already: ``ab_sides.resolve``), then run (or resume) the A/B; the caller
    holds the run directory's lock."""
    for side in plan.sides.values():
        export(side, plan.run_dir, repo)
    plan_cells(plan)
    state = AbState.read(plan.run_dir)
    check_resumable(state, plan)
    append_record(plan.run_dir / AB_FILE, plan_record(plan))
    values = len(plan.cells) * len(SPEED_VALUES)
    if plan.config.pairs < (least := fewest_pairs(SIGNIFICANCE / values)):
        say(f"note: with {values} values judged (Holm), a change needs at least {least} pairs to be called at all")
    for side in plan.sides.values():
        say(side.describe())
    run_pairs(plan, state, say)
    if plan.config.instructions:
        run_instruction_counts(plan, state, say)
    return state


def record_file_collision(run_dir: Path) -> None:
    """An A/B writes ab.jsonl; a directory of `bench run` records is not one to add it to."""
    if (run_dir / RECORDS_FILE).is_file() and not (run_dir / AB_FILE).is_file():
        raise ConfigError(f"{run_dir} holds `bench run` records, not an A/B: choose another --run-id")
