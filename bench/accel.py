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
