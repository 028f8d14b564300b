"""Which data a cell sees: the synthetic world (bench/data.py) or LETOR files (bench/letor.py), and the checks of
a workload made before any cell runs."""

from __future__ import annotations

from collections.abc import Callable

import torch

from bench.conditions import physical_memory_bytes
from bench.config import WorkloadConfig
from bench.data import Workload, generate
from bench.errors import ConfigError
from bench.letor import load_letor
from bench.letor import prepare as prepare_letor


def load_workload(config: WorkloadConfig, seed: int, device: torch.device | str = "cpu") -> Workload:
    """The cell's data: the synthetic world, or LETOR files (parsed once, cached next to them)."""
    if config.data == "letor":
        return load_letor(config, seed, device)
    return generate(config, seed, device)


def check_fits(config: WorkloadConfig) -> None:
    """Refuse a synthetic workload whose data alone would not fit in this machine's memory."""
    memory = physical_memory_bytes()
    if config.data != "synthetic" or memory is None:
        return
    lists = config.batch_size * config.batches + config.valid_slates + config.test_slates
    # values per list: items, utility, mask, slate; 4 bytes each
    per_list = config.candidates * (config.item_dim + 3) + config.user_dim + 3 * config.slate_length
    need = 4 * lists * per_list
    if need > memory:
        raise ConfigError(
            f"the workload's data alone needs about {need / 2**30:,.1f} GiB, more than this machine's "
            f"{memory / 2**30:,.1f} GiB (batch-size x batches, test/valid slates, candidates x item-dim)"
        )


def prepare(config: WorkloadConfig, say: Callable[[str], None]) -> None:
    """Read what every cell of the workload will read, before the first cell: LETOR files are parsed (or found in
    their cache) now, so that a bad file stops the run here; ``say`` gets the progress lines."""
    if config.data != "letor":
        return
    sizes = prepare_letor(config, progress=say)
    say("LETOR queries: " + ", ".join(f"{split} {count:,}" for split, count in sizes.items()))
