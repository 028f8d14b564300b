"""One cell, end to end: data -> model from the registry -> train -> evaluate + measure -> record."""

from __future__ import annotations

import time
import traceback
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

import torch

from bench import measure
from bench.config import CellConfig
from bench.data import Workload, load_workload
from bench.metrics import (
    average_precision_at_k,
    judged,
    ndcg_at_k,
    precision_at_k,
    reciprocal_rank,
    regret,
    slate_hits,
    total_hits,
    utility_gains,
)
from bench.records import SCHEMA_VERSION, environment, json_safe, pack_bits
from bench.train import Diverged, score_split, train
from rerankers import build_model

RANK_KS = (1, 3, 5, 10)  # the k of ndcg@k, map@k and precision@k
NDCG_KS = RANK_KS
EpochCallback = Callable[[int, float, float], None]


def evaluate(scores: torch.Tensor, data, synthetic: bool = True) -> tuple[dict[str, float], torch.Tensor]:
    """Test metrics from [N, S] candidate scores; also the per-slate hits of the judged slates.

    Label-based metrics (slate_acc, total_acc, mrr, ndcg@k, map@k, precision@k) are means
    over the judged slates, those with a relevant (label > 0) displayed item; ``regret`` is
    a mean over every slate; on synthetic data ``utility_ndcg@k`` is NDCG against the true
    utilities (linear gain = utility minus the slate's lowest), also over every slate.
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
    }
    for k in RANK_KS:
        metrics[f"ndcg@{k}"] = mean(ndcg_at_k(on_slate, labels, k, mask))
    for k in RANK_KS:
        metrics[f"map@{k}"] = mean(average_precision_at_k(on_slate, labels, k, mask))
    for k in RANK_KS:
        metrics[f"precision@{k}"] = mean(precision_at_k(on_slate, labels, k, mask))
    metrics["regret"] = regret(on_slate, data.slate_utility, mask).mean().item()
    if synthetic:
        gains = utility_gains(data.slate_utility, mask)
        for k in RANK_KS:
            metrics[f"utility_ndcg@{k}"] = ndcg_at_k(on_slate, gains, k, mask).mean().item()
    metrics["test_slates"] = len(data)
    metrics["judged_slates"] = int(keep.sum().item())
    return metrics, hits[keep]


def _status_of(error: BaseException) -> str:
    if isinstance(error, Diverged):
        return "diverged"
    if isinstance(error, torch.OutOfMemoryError) or "out of memory" in str(error).lower():
        return "oom"
    return "failed"


def new_record(cell: CellConfig, status: str = "ok", error: str | None = None) -> dict[str, Any]:
    """A record with every field of the schema, before any result is filled in."""
    return {
        "schema": SCHEMA_VERSION,
        "key": cell.key(),
        "data_key": cell.data_key(),
        "model": cell.model,
        "config": cell.to_dict(),
        "status": status,
        "error": error,
        "metrics": {},
        "measurements": {},
        "history": {},
        "per_slate": {},
        "data": {},
        "environment": {},
        "started_at": datetime.now(timezone.utc).isoformat(),
        "finished_at": None,
    }


def run_cell(cell: CellConfig, on_epoch: EpochCallback | None = None) -> dict[str, Any]:
    """Run one cell and return its record; errors become a record with a failure status."""
    wall_start = time.perf_counter()
    device = torch.device(cell.device)
    if cell.threads:
        torch.set_num_threads(cell.threads)
    record = new_record(cell)
    record["environment"] = environment(device)
    try:
        torch.manual_seed(cell.seed)
        workload: Workload = load_workload(cell.workload, cell.seed, device)
        record["data"] = workload.describe()
        model = build_model(
            cell.model,
            user_dim=workload.test.inputs.user.shape[1],
            item_dim=workload.test.inputs.items.shape[2],
            **cell.model_kwargs,
        ).to(device)
        record["measurements"]["parameters"] = measure.parameter_count(model)
        measure.reset_peak_memory(device)
        trainable = any(p.requires_grad for p in model.parameters())
        if trainable:
            result = train(model, workload.train, workload.valid, cell.train, cell.workload.batch_size, on_epoch)
            record["history"] = {
                "train_loss": result.train_loss,
                "valid_slate_acc": result.valid_slate_acc,
            }
            record["measurements"].update(
                train_samples_per_s=result.samples_per_second,
                train_steady_seconds=result.steady_seconds,
                train_warmup_seconds=result.warmup_seconds,
            )
        record["measurements"].update(measure.peak_memory_mib(device, "train"))
        scores = score_split(model, workload.test, cell.workload.batch_size)
        metrics, hits = evaluate(scores, workload.test, synthetic=workload.source == "synthetic")
        record["metrics"] = metrics
        record["per_slate"] = {"slate_hits": pack_bits(hits)}
        measure.reset_peak_memory(device)
        serving_batch = workload.test[: cell.workload.batch_size].inputs
        record["measurements"]["infer_samples_per_s"] = measure.inference_throughput(model, serving_batch, cell.measure)
        record["measurements"].update(measure.single_request_latency_ms(model, workload.test.inputs, cell.measure))
        record["measurements"].update(measure.peak_memory_mib(device, "infer"))
    except Exception as error:  # a failed cell is a result, not a crash of the run
        record["status"] = _status_of(error)
        record["error"] = "".join(traceback.format_exception_only(type(error), error)).strip()
    if device.type == "cpu":
        record["measurements"]["cpu_peak_rss_mib"] = measure.cpu_peak_rss_mib()
    record["measurements"]["wall_seconds"] = time.perf_counter() - wall_start
    record["finished_at"] = datetime.now(timezone.utc).isoformat()
    return json_safe(record)
