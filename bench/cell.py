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
from bench.data import generate
from bench.metrics import ndcg_at_k, reciprocal_rank, slate_hits, total_hits, utility_gains
from bench.records import SCHEMA_VERSION, environment, json_safe, pack_bits
from bench.train import Diverged, score_split, train
from rerankers import build_model, get_spec

NDCG_KS = (1, 3, 5)
EpochCallback = Callable[[int, float, float], None]


def evaluate(scores: torch.Tensor, data) -> tuple[dict[str, float], torch.Tensor]:
    """Test metrics from [N, S] candidate scores; also the per-slate hit vector."""
    on_slate = scores.gather(1, data.slate)
    hits = slate_hits(on_slate, data.clicks)
    gains = utility_gains(data.slate_utility)
    metrics = {
        "slate_acc": hits.double().mean().item(),
        "total_acc": total_hits(scores, data.slate, data.clicks).double().mean().item(),
        "mrr": reciprocal_rank(on_slate, data.clicks).mean().item(),
        "test_slates": len(data),
    }
    for k in NDCG_KS:
        metrics[f"ndcg@{k}"] = ndcg_at_k(on_slate, gains, k).mean().item()
    return metrics, hits


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
        workload = generate(cell.workload, cell.seed, device)
        spec = get_spec(cell.model)
        extra = {}
        if spec.needs_utility:  # e.g. the oracle: give it the truth, which only synthetic data knows
            value_model = getattr(workload, "value_model", None)
            if value_model is None:
                raise ValueError(f"model {cell.model!r} needs true utilities, which this workload does not have")
            extra["utility_fn"] = value_model.score
        model = build_model(
            cell.model,
            user_dim=cell.workload.user_dim,
            item_dim=cell.workload.item_dim,
            **cell.model_kwargs,
            **extra,
        ).to(device)
        record["measurements"]["parameters"] = measure.parameter_count(model)
        measure.reset_peak_memory(device)
        # Baselines (random, initial, oracle) train nothing and may have no parameter at all.
        if spec.trainable and any(p.requires_grad for p in model.parameters()):
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
        metrics, hits = evaluate(scores, workload.test)
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
