"""One cell, end to end, in phases that fill its record: data -> model from the registry -> train -> evaluate ->
serve (inference speed and latency) -> account (FLOPs); a failure in any phase is the record's status."""

from __future__ import annotations

import contextlib
import math
import time
import traceback
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
import torch

from bench import measure
from bench.accel import compile_counters, set_matmul_precision
from bench.budget import memory_budget
from bench.catalog import summarising
from bench.conditions import CpuCounters, contention, read_counters
from bench.config import CellConfig
from bench.data import SlateData, Workload
from bench.flops import count_flops, peak_flops
from bench.losses import get_loss
from bench.metrics import (
    average_precision_at_k,
    has_gain,
    judged,
    ndcg_at_k,
    precision_at_k,
    reciprocal_rank,
    regret,
    slate_hits,
    total_hits,
    utility_gains,
)
from bench.records import environment, is_allocation_failure, json_safe, new_record, pack_per_slate
from bench.scores import ScoresError, check_values
from bench.stats import timing_summary
from bench.subject import Subject, build_runnable
from bench.train import Diverged, EpochCallback, score_split, train
from bench.workloads import load_workload
from bench.worlds import World, value_metrics
from rerankers import get_spec
from rerankers.dropout import cpu_dropout_kernel
from rerankers.precision import exact_fp32

RANK_KS = (1, 3, 5, 10, 20)  # the k of ndcg@k, map@k and precision@k, up to the slate length


def evaluate(
    scores: torch.Tensor, data, synthetic: bool = True, world: World | None = None
) -> tuple[dict[str, float], dict[str, torch.Tensor]]:
    """Test metrics from [N, S] candidate scores, and the per-slate values the record keeps for paired tests and
    intervals: ``slate_hits`` of the judged slates and, with a world, ``slate_value_metrics``'s per-slate values.

    Label-based metrics (slate_acc, total_acc, mrr, map@k, precision@k, and ndcg@k on real
    data) are means over the judged slates, those with a relevant (label > 0) displayed item.
    On synthetic data ``ndcg@k`` is NDCG against the true utilities (linear gain = utility
    minus the slate's lowest) over the slates with some gain (not over 1-item slates or slates of
    equal utilities, where every order is ideal), and ``label_ndcg@k`` the same against the
    labels; ``regret`` is a mean over every slate. With a ``world`` (synthetic data), the value of the model's
    order of the displayed slate under it, and its regret against the best order (``slate_value_metrics``).
    """
    mask = data.slate_mask
    on_slate = scores.gather(1, data.slate).masked_fill(~mask, float("-inf"))
    labels = data.labels
    keep = judged(labels, mask)

    def mean(values: torch.Tensor) -> float:
        return values[keep].double().mean().item()

    hits = slate_hits(on_slate, labels, mask)
    metrics = {
        "slate_acc": mean(hits),
        "total_acc": mean(total_hits(scores, data.slate, labels, mask)),
        "mrr": mean(reciprocal_rank(on_slate, labels, mask)),
        "regret": regret(on_slate, data.slate_utility, mask).mean().item(),
    }
    ks = [k for k in RANK_KS if k <= data.slate.shape[1]]
    label_ndcg = "label_ndcg" if synthetic else "ndcg"
    for k in ks:
        metrics[f"{label_ndcg}@{k}"] = mean(ndcg_at_k(on_slate, labels, k, mask))
        metrics[f"map@{k}"] = mean(average_precision_at_k(on_slate, labels, k, mask))
        metrics[f"precision@{k}"] = mean(precision_at_k(on_slate, labels, k, mask))
    if synthetic:
        gains = utility_gains(data.slate_utility, mask)
        gained = has_gain(gains, mask)  # a 1-item slate or equal utilities: no order is better than another
        for k in ks:
            metrics[f"ndcg@{k}"] = ndcg_at_k(on_slate, gains, k, mask)[gained].mean().item()
    per_slate = {"slate_hits": hits[keep]}
    if world is not None:
        values = value_metrics(world, on_slate, data.slate_items, data.slate_utility, mask)
        check_values(values, "the comparison with the best order (oracle)")
        per_slate.update(values)
        metrics.update(slate_value_metrics(per_slate))
    metrics["test_slates"] = len(data)
    metrics["judged_slates"] = int(keep.sum().item())
    return metrics, per_slate


def slate_value_metrics(per_slate: dict[str, torch.Tensor]) -> dict[str, float]:
    """From ``bench.worlds.value_metrics``'s per-slate values: slate_value and slate_regret, means over every
    slate; slate_regret_share, the regret summed over the slates divided by the headroom summed over them (best
    order's value minus a random order's expected value), so 0 is the best order and 1 no better than a random
    one (NaN where no slate has headroom)."""
    headroom = per_slate["slate_headroom"].sum().item()
    regret_sum = per_slate["slate_regret"].sum().item()
    return {
        "slate_value": per_slate["slate_value"].mean().item(),
        "slate_regret": per_slate["slate_regret"].mean().item(),
        "slate_regret_share": regret_sum / headroom if headroom > 0 else math.nan,
    }


def flop_measurements(
    model: torch.nn.Module, batch: SlateData, cell: CellConfig, record: dict[str, Any], trainable: bool
) -> dict[str, Any]:
    """FLOPs per sample, achieved FLOP/s and MFU; counted after training so the count's dropout
    draws cannot change the results."""

    def training_loss(scores: torch.Tensor) -> torch.Tensor:
        return get_loss(cell.train.loss)(scores.gather(1, batch.slate), batch.labels, batch.slate_mask)

    train_flops, infer_flops = count_flops(model, batch.inputs, training_loss)
    n = len(batch)
    x = record["measurements"]
    peak, source = peak_flops(torch.device(cell.device), cell.precision, record["environment"]["device_name"])
    out: dict[str, Any] = {"infer_flops_per_sample": infer_flops / n, "peak_flops_per_s": peak, "peak_source": source}
    out["infer_flops_per_s"] = out["infer_flops_per_sample"] * x["infer_samples_per_s"]
    if trainable and train_flops is not None:
        out["train_flops_per_sample"] = train_flops / n
        out["train_flops_per_s"] = out["train_flops_per_sample"] * x["train_samples_per_s"]
    if peak:
        out["infer_mfu"] = out["infer_flops_per_s"] / peak
        if "train_flops_per_s" in out:
            out["train_mfu"] = out["train_flops_per_s"] / peak
    return out


def _status_of(error: BaseException) -> str:
    if isinstance(error, Diverged):
        return "diverged"
    if isinstance(error, (torch.OutOfMemoryError, MemoryError)) or is_allocation_failure(str(error)):
        return "oom"
    return "failed"


def _cpu_phase(on_cpu: bool) -> contextlib.AbstractContextManager:
    return measure.CpuPhasePeak() if on_cpu else contextlib.nullcontext()


@dataclass
class CellRun:
    """One cell's run: the record its phases fill (data, model, train, evaluate, serve, account), in that order."""

    cell: CellConfig
    record: dict[str, Any]
    device: torch.device
    baseline_mib: float | None  # the process's memory before any data or model: interpreter, torch, harness (CPU)
    memory_method: str | None = None  # how the CPU phases' peaks were measured
    cuda_baseline_mib: float | None = None  # CUDA memory allocated once the data and model are on the device

    @property
    def on_cpu(self) -> bool:
        return self.device.type == "cpu"

    @property
    def measurements(self) -> dict[str, Any]:
        return self.record["measurements"]

    @property
    def timings(self) -> dict[str, Any]:
        return self.record["timings"]


def start(cell: CellConfig) -> CellRun:
    """The cell's threads, matmul precision and environment, and the process's memory before anything else."""
    device = torch.device(cell.device)
    if cell.threads:
        torch.set_num_threads(cell.threads)
    record = new_record(cell)
    set_matmul_precision(cell.precision)
    record["environment"] = environment(device, cell.precision, cell.compile)
    record["environment"].update(cpu_dropout=cell.cpu_dropout, cpu_dropout_kernel=cpu_dropout_kernel(cell.cpu_dropout))
    return CellRun(cell, record, device, measure.cpu_rss_mib() if device.type == "cpu" else None)


def data_phase(run: CellRun) -> Workload:
    """The cell's data, from its seed (which also seeds the model's initialisation that follows)."""
    torch.manual_seed(run.cell.seed)
    workload = load_workload(run.cell.workload, run.cell.seed, run.device)
    run.record["data"] = workload.describe()
    if run.baseline_mib is not None:
        run.measurements["cpu_rss_baseline_mib"] = run.baseline_mib
        run.measurements["cpu_rss_data_mib"] = (measure.cpu_rss_mib() or run.baseline_mib) - run.baseline_mib
    return workload


def model_phase(run: CellRun, workload: Workload) -> Subject:
    """The model from the registry, with the same CPU dropout for every model (plugins included), on the device,
    with the cell's precision and compile (``subject.build_runnable``, which `bench ab`'s processes use too)."""
    spec = get_spec(run.cell.model)
    run.record["model_properties"] = {"scores_undisplayed_meaningfully": spec.scores_undisplayed_meaningfully}
    built = build_runnable(run.cell, workload, run.device)
    run.record["environment"]["dropout_modules"] = built.dropout_modules
    run.record["environment"]["attention_modules"] = built.attention_modules
    run.measurements["parameters"] = measure.parameter_count(built.model)
    run.cuda_baseline_mib = measure.cuda_phase_start(run.device)
    if run.cuda_baseline_mib is not None:
        run.measurements["cuda_allocated_baseline_mib"] = run.cuda_baseline_mib
    return built


def serving_sampler(run: CellRun, built: Subject, evaluated: SlateData) -> measure.ServingSampler:
    """The serving measurements, spread over the cell: one share after each epoch, the rest at the end. The
    training phase's memory peak thus includes eval-mode forward passes at the training batch size, which hold
    less than a training step does."""
    batch_size = run.cell.workload.batch_size
    bursts = run.cell.train.epochs + 1 if built.trainable else 1
    return measure.ServingSampler(
        built.runnable, evaluated[:batch_size].inputs, evaluated.inputs, run.cell.measure, bursts=bursts
    )


def train_phase(
    run: CellRun, built: Subject, workload: Workload, serving: measure.ServingSampler, on_epoch: EpochCallback | None
) -> None:
    """Train (a model that trains), a serving burst after each epoch; history, throughput and memory."""

    def after_epoch(epoch: int, loss: float, valid_acc: float) -> None:
        serving.burst()  # outside every timed training block (train() calls this after validation)
        if on_epoch is not None:
            on_epoch(epoch, loss, valid_acc)

    x = run.measurements
    if built.trainable:
        with _cpu_phase(run.on_cpu) as phase:
            cell = run.cell
            result = train(
                built.runnable, workload.train, workload.valid, cell.train, cell.workload.batch_size, after_epoch
            )
        run.record["history"] = {
            "train_loss": result.train_loss,
            "valid_slate_acc": result.valid_slate_acc,
            "selected_epoch": result.selected_epoch,
            "stop_epoch": result.stop_epoch,
            "stopped_early": result.stop_epoch < cell.train.epochs,
        }
        run.record["environment"]["optimizer"] = result.optimizer
        run.timings["train_samples_per_s"] = timing_summary(result.block_rates, result.epoch_blocks)
        x.update(
            train_samples_per_s=run.timings["train_samples_per_s"]["median"],
            train_steady_seconds=result.steady_seconds,
            train_warmup_seconds=result.warmup_seconds,
        )
        if phase is not None:
            x.update(measure.phase_memory_mib(phase, "train", run.baseline_mib))
            run.memory_method = phase.method
    x.update(measure.peak_memory_mib(run.device, "train", run.cuda_baseline_mib))


def evaluate_phase(run: CellRun, built: Subject, evaluated: SlateData, workload: Workload) -> None:
    """The metrics on the evaluated split (test, or valid for a tuning trial) and the per-slate values behind them
    (hits as packed bits, values in half precision: bench/records.py); on synthetic data also the value of the
    model's order under the workload's world."""
    scores = score_split(built.runnable, evaluated, run.cell.workload.batch_size)
    with exact_fp32(run.device.type):  # the metrics in plain fp32 whatever the cell's precision (TF32)
        metrics, per_slate = evaluate(scores, evaluated, workload.source == "synthetic", workload.world)
    run.record["metrics"] = metrics
    run.record["per_slate"] = pack_per_slate(per_slate)


def serve_phase(run: CellRun, serving: measure.ServingSampler) -> None:
    """The serving shares not taken yet; inference throughput, batch-1 latency percentiles and memory."""
    x, timings = run.measurements, run.timings
    serving.model.zero_grad(set_to_none=True)  # the last training step's gradients are no part of serving
    infer_baseline_mib = measure.cuda_phase_start(run.device)
    with _cpu_phase(run.on_cpu) as phase:
        throughput, latency_samples = serving.finish()
    timings["infer_samples_per_s"] = timing_summary(throughput, serving.segments["infer_samples_per_s"])
    timings["latency_b1_ms"] = timing_summary(latency_samples, serving.segments["latency_b1_ms"])
    if serving.latency_cuda_ms:  # CUDA: the same requests' device time between events
        timings["latency_b1_cuda_ms"] = timing_summary(serving.latency_cuda_ms, serving.segments["latency_b1_ms"])
        x["latency_b1_cuda_p50_ms"] = timings["latency_b1_cuda_ms"]["median"]
    x["serving_bursts"] = serving.bursts
    x["infer_calls_per_block"] = serving.calls_per_block
    x["infer_samples_per_s"] = timings["infer_samples_per_s"]["median"]
    latency_ms = timings["latency_b1_ms"]["samples"]
    x.update({m.name: float(np.percentile(latency_ms, 100 * m.quantile)) for m in summarising("latency_b1_ms")})
    if phase is not None:
        x.update(measure.phase_memory_mib(phase, "infer", run.baseline_mib))
        run.memory_method = phase.method
    x.update(measure.peak_memory_mib(run.device, "infer", infer_baseline_mib))
    net = [x[name] for name in ("cpu_net_peak_rss_train_mib", "cpu_net_peak_rss_infer_mib") if name in x]
    if net:  # the cell's own CPU footprint: its larger phase
        x["cpu_net_peak_rss_mib"] = max(net)


def account_phase(run: CellRun, built: Subject, evaluated: SlateData) -> None:
    """FLOPs per sample, FLOP/s and MFU, counted last so that the count's dropout draws change no result."""
    batch = evaluated[: run.cell.workload.batch_size]
    run.measurements.update(flop_measurements(built.model, batch, run.cell, run.record, built.trainable))


def finish(run: CellRun, counters_before: CpuCounters, wall_start: float) -> dict[str, Any]:
    """How busy the machine was during the cell, the peak memory and wall time: the finished record."""
    conditions = contention(counters_before, read_counters(), torch.get_num_threads())
    run.record["conditions"] = {**conditions, "cpu_memory_method": run.memory_method}
    if not run.on_cpu:  # other work on the accelerator is not measured: only the CPU's counters are read
        run.record["conditions"]["device_contention"] = "not measured"
    if run.cell.compile:
        run.record["environment"].update(compile_counters())
    if run.on_cpu:
        run.measurements["cpu_peak_rss_mib"] = measure.cpu_peak_rss_mib()
    run.measurements["wall_seconds"] = time.perf_counter() - wall_start
    run.record["finished_at"] = datetime.now(UTC).isoformat()
    return json_safe(run.record)


def run_cell(cell: CellConfig, on_epoch: EpochCallback | None = None) -> dict[str, Any]:
    """Run one cell and return its record; errors become a record with a failure status."""
    wall_start = time.perf_counter()
    run = start(cell)
    counters_before = read_counters()
    budget: dict[str, Any] = {}
    try:
        # The budget ends before the error is written up, so that the write-up has memory to work with.
        with memory_budget(cell.memory_limit, run.device) as applied:
            budget.update(applied)
            workload = data_phase(run)
            built = model_phase(run, workload)
            evaluated = workload.valid if cell.eval_split == "valid" else workload.test
            serving = serving_sampler(run, built, evaluated)
            train_phase(run, built, workload, serving, on_epoch)
            evaluate_phase(run, built, evaluated, workload)
            serve_phase(run, serving)
            account_phase(run, built, evaluated)
    except Exception as error:  # a failed cell is a result, not a crash of the run
        run.record["status"] = _status_of(error)
        run.record["error"] = "".join(traceback.format_exception_only(type(error), error)).strip()
        if isinstance(error, ScoresError):  # the model broke its output's contract (bench/scores.py): name it
            run.record["error"] = f"model {cell.model!r} {error}"
    run.record["memory_budget"] = budget
    return finish(run, counters_before, wall_start)
