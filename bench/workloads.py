"""Which data a cell sees: the synthetic world (bench/data.py) or LETOR files (bench/letor.py)."""

from __future__ import annotations

import torch

from bench.config import WorkloadConfig
from bench.data import Workload, generate
from bench.letor import load_letor


def load_workload(config: WorkloadConfig, seed: int, device: torch.device | str = "cpu") -> Workload:
    """The cell's data: the synthetic world, or LETOR files (parsed once, cached next to them)."""
    if config.data == "letor":
        return load_letor(config, seed, device)
    return generate(config, seed, device)
