"""Where the time of a default cell goes, per model: the training step's shares and the cell's phases.

    python benchmarks/profile_cells.py                                   # every trainable model, default profile
    python benchmarks/profile_cells.py --models transformer,gsf --set cpu_dropout=torch
    python benchmarks/profile_cells.py --run results/<run-id>            # also a real run's start-up and report
    python benchmarks/profile_cells.py --json out.json --markdown out.md

For each model, built as `bench run` builds it (the sweep's cell, the registry, the cell's CPU dropout, precision
and compile, the harness's optimiser, loss and training step), in this one process:

1. **Speed**: warm-up steps, then ``--blocks`` timed blocks of ``--steps`` training steps (no profiler): the
   median samples/s and its range.
2. **Step shares** (torch.profiler, ``--profiled-steps`` steps): each aten operator's own time is given to the
   innermost labelled part of the step it ran in: the dropout modules (mask drawing and applying, forward and
   backward; a mask drawn inside an attention module counts here too), the attention modules, the norm layers,
   the rest of the model, the loss, the optimiser (step and zero_grad) and the glue outside them (picking the
   displayed slates' scores, the batch). A backward operator belongs to the part whose forward operator made its
   autograd node (matched by sequence number). What is left of the step's unprofiled wall time when every
   operator's time is taken out is Python and framework overhead (a lower bound: the profiler slows operators a
   little). Matmul kernels (mm, addmm, bmm, baddbmm) are also given as one share across the parts.
3. **MFU**: the training FLOPs per sample (``bench.flops.count_flops``, as a cell counts them) times the samples/s,
   over (a) the cell's peak (``bench.flops.peak_flops``: a square-matmul probe on CPU) and (b) a replay, in this
   process, of the step's own matmul calls with their shapes (every mm/addmm/bmm/baddbmm of a profiled step,
   forward and backward, back to back on random inputs): the FLOP/s this step's matmuls reach alone.
4. **Cell phases**: ``bench.cell.run_cell`` on the same cell (its record is discarded), each phase timed: data,
   model, training (steady steps, warm-up steps, per-epoch validation, serving bursts after each epoch, the rest),
   evaluation, the serving share at the end, FLOP counting, finishing the record.

With ``--run DIR``, a run of `bench run`: the time between one cell's end and the next one's start (the driver,
the process's start, writing the record), and how long rebuilding its report takes.

Timings are taken on whatever machine this runs on, one thing at a time: run it alone on a quiet machine.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import inspect
import itertools
import json
import statistics
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.autograd.profiler import record_function
from torch.profiler import ProfilerActivity, profile

from bench import cell as cell_module
from bench import measure
from bench import train as train_module
from bench.cell import run_cell
from bench.config import CellConfig
from bench.flops import count_flops, peak_flops
from bench.losses import get_loss
from bench.options import check_settings
from bench.records import cpu_name, load_records
from bench.sweep import build_cells
from bench.train import make_optimizer, train_step
from bench.workloads import load_workload
from rerankers import get_spec, model_names

ROOT = Path(__file__).resolve().parents[1]

try:
    from bench.subject import build_runnable
except ImportError:  # a tree before bench/subject.py (PYTHONPATH=an older checkout): this repository's, by path
    _spec = importlib.util.spec_from_file_location("_profile_subject", ROOT / "bench" / "subject.py")
    _subject = importlib.util.module_from_spec(_spec)
    sys.modules[_spec.name] = _subject
    _spec.loader.exec_module(_subject)
    build_runnable = _subject.build_runnable

PARTS = ("dropout", "attention", "norm", "model (other)", "loss", "optimizer", "glue", "python & framework")
LABELLED = ((nn.Dropout, "dropout"), (nn.MultiheadAttention, "attention"), ((nn.LayerNorm, nn.BatchNorm1d), "norm"))
MASK_OPS = ("aten::bernoulli_", "aten::native_dropout", "aten::random_")  # drawing a dropout mask
MATMUL_OPS = ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm")
WRAPPERS = ("autograd::engine::evaluate_function", "Optimizer.", "## ")  # labels, not operators
CELL_PHASES = ("data_phase", "model_phase", "train_phase", "evaluate_phase", "serve_phase", "account_phase", "finish")


def cell_for(model: str, profile_name: str, settings: dict[str, Any]) -> CellConfig:
    """The cell `bench run --models MODEL --profile PROFILE` (plus ``settings``) runs on the CPU."""
    given = {"models": model, "profile": profile_name, "device": "cpu", **settings}
    if "command_line" in inspect.signature(check_settings).parameters:  # a tree before bench/declare.py
        return build_cells(check_settings(given, "--set", command_line=True))[0]
    return build_cells(check_settings(given))[0]


class Step:
    """One model's training step as a cell runs it: data, model, optimiser and loss, built by the harness."""

    def __init__(self, cell: CellConfig) -> None:
        self.cell = cell
        if cell.threads:
            torch.set_num_threads(cell.threads)
        torch.manual_seed(cell.seed)
        self.workload = load_workload(cell.workload, cell.seed, torch.device("cpu"))
        self.subject = build_runnable(cell, self.workload, torch.device("cpu"))
        self.optimizer = make_optimizer(self.subject.runnable, cell.train)
        self.loss_fn = get_loss(cell.train.loss)
        self.batches = list(self.workload.train.batches(cell.workload.batch_size))
        self.samples = len(self.batches[0])
        self.calls = 0
        self.subject.runnable.train()

    def __call__(self, loss_fn: Callable | None = None) -> torch.Tensor:
        batch = self.batches[self.calls % len(self.batches)]
        self.calls += 1
        return train_step(self.subject.runnable, batch, self.optimizer, loss_fn or self.loss_fn)

    def rates(self, blocks: int, steps: int) -> list[float]:
        """samples/s of ``blocks`` timed blocks of ``steps`` steps, after a warm-up block."""
        for _ in range(steps):
            self()
        out = []
        for _ in range(blocks):
            start = time.perf_counter()
            for _ in range(steps):
                self()
            out.append(steps * self.samples / (time.perf_counter() - start))
        return out


@contextlib.contextmanager
def labelled(model: nn.Module) -> Iterator[None]:
    """Profiler labels around the forward of the model and of its dropout, attention and norm modules."""
    handles, open_labels = [], []

    def enter(label: str):
        def hook(*_):
            context = record_function(f"## {label}")
            context.__enter__()
            open_labels.append(context)

        return hook

    def leave(*_):
        open_labels.pop().__exit__(None, None, None)

    targets = [(model, "model (other)")]
    targets += [(m, label) for m in model.modules() for kinds, label in LABELLED if isinstance(m, kinds)]
    for module, label in targets:
        handles.append(module.register_forward_pre_hook(enter(label)))
        handles.append(module.register_forward_hook(leave))
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def _label_of(event: Any) -> str | None:
    """The innermost ``## label`` above ``event`` (itself included), or None."""
    while event is not None:
        if event.name.startswith("## "):
            return event.name[3:]
        if event.name.startswith("Optimizer."):
            return "optimizer"
        event = event.cpu_parent
    return None


def _part_of(event: Any, by_sequence: dict[int, str]) -> str:
    label = _label_of(event)
    if event.name in MASK_OPS and label in ("attention", "dropout"):
        return "dropout"
    if label is not None:
        return label
    node = event
    while node is not None:  # a backward operator: the part of the forward operator that made its node
        if node.name.startswith("autograd::engine::evaluate_function") and node.sequence_nr in by_sequence:
            return by_sequence[node.sequence_nr]
        node = node.cpu_parent
    return "glue"


def step_shares(step: Step, steps: int) -> dict[str, Any]:
    """Each part's share (``PARTS``) of the profiled steps' wall time, the matmul kernels' share, and the matmul
    calls of one step."""
    loss = step.loss_fn

    def labelled_loss(*args):
        with record_function("## loss"):
            return loss(*args)

    with labelled(step.subject.runnable), profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        start = time.perf_counter()
        for _ in range(steps):
            step(labelled_loss)
        wall = time.perf_counter() - start
    events = [e for e in prof.events() if e.device_type.name == "CPU"]
    by_sequence = {}
    for event in events:
        if event.sequence_nr >= 0 and not event.name.startswith("autograd::"):
            by_sequence.setdefault(event.sequence_nr, _label_of(event) or "glue")
    seconds: dict[str, float] = defaultdict(float)
    matmul, calls = 0.0, []
    for event in events:
        if event.name.startswith(WRAPPERS):
            continue
        own = event.self_cpu_time_total / 1e6
        seconds[_part_of(event, by_sequence)] += own
        if event.name in MATMUL_OPS:
            matmul += own
            calls.append((event.name, [list(s) for s in event.input_shapes[:3]]))
    seconds["python & framework"] = max(0.0, wall - sum(seconds.values()))
    per_step = calls[: len(calls) // steps]  # every step makes the same calls
    shares = {p: seconds.get(p, 0.0) / wall for p in PARTS}
    return {"shares": shares, "matmul_share": matmul / wall, "matmul_calls": per_step}


def _matmul_flops(name: str, shapes: list[list[int]]) -> int:
    if name == "aten::mm":
        (m, k), (_, n) = shapes[0], shapes[1]
        return 2 * m * k * n
    if name == "aten::addmm":
        (m, k), (_, n) = shapes[1], shapes[2]
        return 2 * m * k * n
    first, second = (shapes[0], shapes[1]) if name == "aten::bmm" else (shapes[1], shapes[2])
    b, m, k = first
    return 2 * b * m * k * second[2]


def replay_matmuls(calls: list[tuple[str, list[list[int]]]], repeats: int = 7) -> tuple[float, float]:
    """(seconds, FLOPs) of the step's matmul calls run back to back on random inputs: the median of ``repeats``."""
    prepared = [(getattr(torch, name[6:]), [torch.randn(*shape) for shape in shapes]) for name, shapes in calls]
    flops = sum(_matmul_flops(name, shapes) for name, shapes in calls)

    def once() -> float:
        start = time.perf_counter()
        for function, inputs in prepared:
            function(*inputs)
        return time.perf_counter() - start

    once()
    return statistics.median(once() for _ in range(repeats)), flops


def mfu(step: Step, samples_per_s: float, calls: list) -> dict[str, Any]:
    """Training FLOP/s over the cell's peak and over a bare replay of the step's own matmuls."""
    cell, batch = step.cell, step.workload.test[: step.cell.workload.batch_size]

    def training_loss(scores: torch.Tensor) -> torch.Tensor:
        return step.loss_fn(scores.gather(1, batch.slate), batch.labels, batch.slate_mask)

    train_flops, _ = count_flops(step.subject.model, batch.inputs, training_loss)
    per_sample = (train_flops or 0) / len(batch)
    achieved = per_sample * samples_per_s
    peak, source = peak_flops(torch.device("cpu"), cell.precision, cpu_name())
    replay_seconds, replay_flops = replay_matmuls(calls) if calls else (0.0, 0)
    shaped = replay_flops / replay_seconds if replay_seconds else None
    return {
        "train_flops_per_sample": per_sample,
        "train_flops_per_s": achieved,
        "peak_flops_per_s": peak,
        "peak_source": source,
        "mfu": achieved / peak if peak else None,
        "own_matmuls_flops_per_s": shaped,
        "mfu_own_matmuls": achieved / shaped if shaped else None,
        "own_matmuls_seconds_per_step": replay_seconds,
    }


@contextlib.contextmanager
def timed_phases(into: dict[str, float]) -> Iterator[None]:
    """``bench.cell``'s phases, per-epoch validation and serving bursts timed into ``into`` (seconds)."""
    patched = [(cell_module, name) for name in CELL_PHASES]
    patched += [(train_module, "valid_slate_acc"), (measure.ServingSampler, "burst")]
    # A tree whose cell has no such phases (before they were named) is timed where it has them.
    originals = [(owner, name, getattr(owner, name)) for owner, name in patched if hasattr(owner, name)]

    def timing(name: str, function: Callable) -> Callable:
        def timed(*args, **kwargs):
            start = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                into[name] = into.get(name, 0.0) + time.perf_counter() - start

        return timed

    for owner, name, function in originals:
        setattr(owner, name, timing(name, function))
    try:
        yield
    finally:
        for owner, name, function in originals:
            setattr(owner, name, function)


def cell_phases(cell: CellConfig) -> dict[str, Any]:
    """One run of the cell, inline, each phase's seconds (the training phase split into its parts); None for a
    phase the tree's cell does not name (before its phases were functions, all of it is in "other")."""
    seconds: dict[str, float] = {}
    with timed_phases(seconds):
        start = time.perf_counter()
        record = run_cell(cell)
        wall = time.perf_counter() - start
    x = record["measurements"]
    bursts = seconds.get("burst", 0.0) - seconds.get("serve_phase", 0.0)  # serve_phase takes the last share
    training = {
        "steady steps": x.get("train_steady_seconds", 0.0),
        "warm-up steps": x.get("train_warmup_seconds", 0.0),
        "validation": seconds.get("valid_slate_acc", 0.0),
        "serving bursts": max(0.0, bursts),
    }
    if "train_phase" in seconds:
        training["rest"] = max(0.0, seconds["train_phase"] - sum(training.values()))
    named = {"data": "data_phase", "model": "model_phase", "evaluate": "evaluate_phase"}
    named |= {"serving (end)": "serve_phase", "FLOP counting": "account_phase", "finish": "finish"}
    phases = {name: seconds.get(phase) for name, phase in list(named.items())[:2]}
    phases |= {f"train: {name}": value for name, value in training.items()}
    phases |= {name: seconds.get(phase) for name, phase in list(named.items())[2:]}
    phases["other"] = max(0.0, wall - sum(v for v in phases.values() if v is not None))
    return {"wall_seconds": wall, "phases": phases, "status": record["status"], "epochs": cell.train.epochs}


def profile_model(name: str, args: argparse.Namespace, settings: dict[str, Any]) -> dict[str, Any]:
    cell = cell_for(name, args.profile, settings)
    step = Step(cell)
    rates = step.rates(args.blocks, args.steps)
    samples_per_s = statistics.median(rates)
    shares = step_shares(step, args.profiled_steps)
    result = {
        "model": name,
        "cell_key": cell.key(),
        "environment": {"cpu_dropout": cell.cpu_dropout, "compile": cell.compile, "threads": torch.get_num_threads()},
        "samples_per_s": samples_per_s,
        "samples_per_s_blocks": rates,
        "step_seconds": step.samples / samples_per_s,
        **shares,
        **mfu(step, samples_per_s, shares["matmul_calls"]),
    }
    del step
    if not args.no_cell:
        result["cell"] = cell_phases(cell)
    return result


def run_overhead(run_dir: Path) -> dict[str, Any]:
    """A `bench run`'s gaps between cells (driver, process start, record) and its report's rebuild time."""
    from bench.report import write_report

    records = sorted(load_records(run_dir / "records.jsonl"), key=lambda r: r["started_at"])
    stamps = [(datetime.fromisoformat(r["started_at"]), datetime.fromisoformat(r["finished_at"])) for r in records]
    gaps = [(start - previous_end).total_seconds() for (_, previous_end), (start, _) in itertools.pairwise(stamps)]
    cells = sum(r["measurements"].get("wall_seconds", 0.0) for r in records)
    start = time.perf_counter()
    write_report(run_dir)
    report = time.perf_counter() - start
    return {"cells": len(records), "cell_seconds": cells, "gaps_seconds": gaps, "report_seconds": report}


def _percent(share: float) -> str:
    return f"{100 * share:.0f}%"


def markdown(results: list[dict[str, Any]], overhead: dict[str, Any] | None) -> str:
    lines = ["| model | samples/s | step (ms) | " + " | ".join(PARTS) + " | matmul kernels |"]
    lines.append("|" + "---|" * (len(PARTS) + 4))
    for r in results:
        step = r["step_seconds"]
        shares = " | ".join(_percent(r["shares"][p]) for p in PARTS)
        speed = f"{r['samples_per_s']:,.0f} | {1000 * step:.1f}"
        lines.append(f"| {r['model']} | {speed} | {shares} | {_percent(r['matmul_share'])} |")
    lines += [
        "",
        "| model | train FLOP/sample | GFLOP/s | MFU (square-matmul peak) | own matmuls alone "
        "(GFLOP/s) | MFU vs own matmuls |",
        "|---|---|---|---|---|---|",
    ]
    for r in results:
        own = r["own_matmuls_flops_per_s"]
        lines.append(
            f"| {r['model']} | {r['train_flops_per_sample'] / 1e6:.2f}M | {r['train_flops_per_s'] / 1e9:.1f} | "
            f"{100 * (r['mfu'] or 0):.1f}% | {own / 1e9 if own else 0:.1f} | {100 * (r['mfu_own_matmuls'] or 0):.0f}% |"
        )
    with_cells = [r for r in results if "cell" in r]
    if with_cells:
        names = list(with_cells[0]["cell"]["phases"])
        lines += ["", "| model | cell (s) | " + " | ".join(names) + " |", "|" + "---|" * (len(names) + 2)]
        for r in with_cells:
            phases = r["cell"]["phases"]
            lines.append(
                f"| {r['model']} | {r['cell']['wall_seconds']:.1f} | "
                + " | ".join("-" if phases.get(n) is None else f"{phases[n]:.2f}" for n in names)
                + " |"
            )
    if overhead:
        gaps = overhead["gaps_seconds"]
        lines += [
            "",
            f"Run: {overhead['cells']} cells, {overhead['cell_seconds']:.1f} s inside cells; between cells "
            f"{sum(gaps):.1f} s in all (median {statistics.median(gaps) if gaps else 0:.2f} s); report rebuilt "
            f"in {overhead['report_seconds']:.1f} s.",
        ]
    return "\n".join(lines) + "\n"


def parse_settings(items: list[str]) -> dict[str, Any]:
    settings = {}
    for item in items:
        key, _, value = item.partition("=")
        try:
            settings[key] = json.loads(value)
        except ValueError:
            settings[key] = value
    return settings


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="all", help="comma list, or all (the trainable ones)")
    parser.add_argument("--profile", default="default")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="a sweep-file key")
    parser.add_argument("--steps", type=int, default=10, help="steps per timed block")
    parser.add_argument("--blocks", type=int, default=7, help="timed blocks")
    parser.add_argument("--profiled-steps", type=int, default=5)
    parser.add_argument("--no-cell", action="store_true", help="skip the cell-phase run")
    parser.add_argument("--run", type=Path, help="a bench run directory: start-up gaps and report time")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--markdown", type=Path)
    args = parser.parse_args(argv)
    settings = parse_settings(args.set)
    names = [n for n in model_names() if get_spec(n).trainable] if args.models == "all" else args.models.split(",")
    results = []
    for name in names:
        results.append(profile_model(name, args, settings))
        print(f"{name}: {results[-1]['samples_per_s']:,.0f} samples/s", file=sys.stderr, flush=True)
    overhead = run_overhead(args.run) if args.run else None
    text = markdown(results, overhead)
    print(text)
    header = {"cpu": cpu_name(), "torch": torch.__version__, "threads": torch.get_num_threads(), "settings": settings}
    if args.json:
        args.json.write_text(json.dumps({"header": header, "models": results, "run": overhead}, indent=1))
    if args.markdown:
        args.markdown.write_text(text)


if __name__ == "__main__":
    main()
