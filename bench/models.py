"""A cell's model, from the registry: the options each model takes and the checks made before any cell runs (option
values, the size against this machine's memory, construction with the model's own message). Building it, for a cell
and for `bench ab`'s processes alike, is bench/subject.py's."""

from __future__ import annotations

import math
from typing import Any

import torch

from bench.conditions import physical_memory_bytes
from bench.config import MAX_WIDTH, CellConfig
from bench.errors import ConfigError
from bench.subject import construct
from rerankers import get_spec

# Bytes per parameter while training: fp32 weights, gradients and Adam's two moments.
TRAINING_BYTES_PER_PARAMETER = 16


def accepted_options(model: str, options: dict[str, Any]) -> dict[str, Any]:
    """The ones of ``options`` that the model's factory takes (a sweep's options go to the models that have them)."""
    accepted = get_spec(model).options()
    return {name: value for name, value in options.items() if name in accepted}


def check_option_values(options: dict[str, Any]) -> None:
    """Model options are sizes and rates: finite, positive, and no wider than MAX_WIDTH; a number written with
    digits other than 0-9 (full-width, Arabic-Indic...) is refused rather than passed on as a string."""
    for name, value in options.items():
        if isinstance(value, str):
            check_ascii_digits(name, value)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"model option {name} must be a finite number, got {value}")
        if value <= 0:
            raise ConfigError(f"model option {name} must be positive, got {value}")
        if isinstance(value, int) and value > MAX_WIDTH:
            raise ConfigError(f"model option {name} is too large ({value} > {MAX_WIDTH})")


def check_ascii_digits(name: str, value: str) -> None:
    """A ConfigError naming the option and value when ``value`` holds digits outside 0-9."""
    foreign = [c for c in dict.fromkeys(value) if c.isdigit() and not c.isascii()]
    if foreign:
        listed = ", ".join(f"{c!r} (U+{ord(c):04X})" for c in foreign[:5])
        hint = f"; write {name}={int(value)}" if value.strip().isdecimal() else ""
        raise ConfigError(f"model option {name}={value!r} has digits other than 0-9: {listed}{hint}")


def check_buildable(cell: CellConfig) -> None:
    """A ConfigError, before any cell starts, for bad model options (with the model's own message) and for a
    model too large to train in this machine's memory (counted on the meta device, which allocates nothing)."""
    check_option_values(cell.model_kwargs)
    w = cell.workload
    try:
        with torch.device("meta"):
            parameters = sum(p.numel() for p in construct(cell, w.user_dim, w.item_dim).parameters())
    except Exception:  # noqa: BLE001 - the real construction below gives the model's own message
        parameters = None
    memory = physical_memory_bytes()
    if parameters and memory and parameters * TRAINING_BYTES_PER_PARAMETER > memory:
        raise ConfigError(
            f"model {cell.model!r} with options {cell.model_kwargs} has {parameters:,} parameters: training needs "
            f"about {parameters * TRAINING_BYTES_PER_PARAMETER / 2**30:,.0f} GiB, more than this machine's "
            f"{memory / 2**30:,.0f} GiB"
        )
    try:
        construct(cell, w.user_dim, w.item_dim)
    except Exception as error:  # noqa: BLE001 - whatever a constructor raises on bad options is bad input
        raise ConfigError(
            f"model {cell.model!r} rejects its options {cell.model_kwargs}: {type(error).__name__}: {error}"
        ) from None
