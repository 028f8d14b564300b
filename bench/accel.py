"""The device a cell runs on, and its run-time speed options: precision (autocast, TF32) and torch.compile."""

from __future__ import annotations

import torch
from torch import nn

from bench.errors import ConfigError
from rerankers import SlateBatch


def resolve_device(name: str) -> str:
    """The device a run's cells use: ``auto`` is cuda when a GPU is there, else cpu; ``cuda`` needs a GPU."""
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda was requested but no CUDA GPU is available (use --device cpu or auto)")
    return name


class Autocast(nn.Module):
    """Runs the wrapped model under bf16 autocast and hands back fp32 scores."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, batch: SlateBatch) -> torch.Tensor:
        with torch.autocast(device_type=batch.items.device.type, dtype=torch.bfloat16):
            return self.model(batch).float()


def set_matmul_precision(precision: str) -> None:
    """TF32 tensor-core matmuls only for ``tf32``; plain fp32 otherwise (recorded per cell)."""
    allow = precision == "tf32"
    torch.backends.cuda.matmul.allow_tf32 = allow
    torch.backends.cudnn.allow_tf32 = allow


def prepare(model: nn.Module, precision: str, compile_model: bool) -> nn.Module:
    """The module the cell trains and measures: ``model`` with the cell's speed options applied."""
    set_matmul_precision(precision)
    runnable = Autocast(model) if precision == "bf16" else model
    # Shapes differ from cell to cell, so each cell compiles its own; the compile time lands in
    # the training warm-up and inference warm-up, never in steady-state figures.
    return torch.compile(runnable) if compile_model else runnable


def compile_counters() -> dict[str, int]:
    """What torch.compile did in this process, as Dynamo counts it: graphs compiled, graph breaks and frames
    compiled. After a cell whose compiled step falls back to eager (e.g. past the recompile limit) the graphs stop
    growing, so the record shows it."""
    from torch._dynamo.utils import counters

    return {
        "compile_graphs": int(counters["stats"].get("unique_graphs", 0)),
        "compile_graph_breaks": int(sum(counters["graph_break"].values())),
        "compile_frames": int(counters["frames"].get("ok", 0)),
    }


def release_between_cells() -> None:
    """Before the next cell in the same process (the inline executor): Dynamo's compiled code and counters
    dropped, so a cell compiles its own graphs and never meets the recompile limit that earlier cells filled,
    and CUDA's cached blocks released, so a cell's reserved memory is its own."""
    import gc

    import torch._dynamo
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    gc.collect()
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.empty_cache()
