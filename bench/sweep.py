"""A sweep: the product of typed axes, each combination one cell.

Settings come from (lowest to highest precedence) the profile, a TOML sweep file and
the command line. Any axis may be a list; ``models`` and ``seeds`` are axes too.
"""

from __future__ import annotations

import itertools
import json
import tomllib
from dataclasses import replace
from pathlib import Path
from typing import Any

from bench.config import CellConfig, ConfigError, profile, validate, with_overrides

# Axis name -> type of its values, in the order cells are enumerated.
AXES: dict[str, type] = {
    "model": str,
    "batch_size": int,
    "slate_length": int,
    "candidates": int,
    "user_dim": int,
    "item_dim": int,
    "loss": str,
    "seed": int,
}
# Single-valued settings a sweep file or the CLI may give.
SCALARS: dict[str, type] = {
    "profile": str,
    "seed": int,
    "seeds": int,
    "candidate_ratio": float,
    "batches": int,
    "epochs": int,
    "valid_slates": int,
    "test_slates": int,
    "d_model": int,
    "threads": int,
    "device": str,
    "precision": str,
    "compile": bool,
    "cpu_dropout": str,
    "isolation": str,
    "timeout": float,
    "executor": str,
    "ray_address": str,
    "ray_cpus": int,
    "retries": int,
    "baseline": str,
    "model_arg": list,
    "slate_min": int,
    "initial_noise": str,
    "click_model": str,
    "eta": float,
    "labels": str,
    "data": str,
    "data_path": str,
    "initial_ranker": str,
}
FILE_KEYS = {"models", *AXES, *SCALARS} - {"model"}
# Single-valued settings that are fields of the cell config, as they are (initial_noise is parsed).
CELL_SETTINGS = (
    "batches", "epochs", "valid_slates", "test_slates", "threads", "device", "precision", "compile",
    "slate_min", "click_model", "eta", "labels", "data", "data_path", "initial_ranker", "cpu_dropout",
)  # fmt: skip


def parse_list(value: Any, kind: type, name: str) -> list[Any]:
    """A comma string, a scalar or a list -> a non-empty list of ``kind``."""
    items = value if isinstance(value, list) else str(value).split(",")
    try:
        parsed = [kind(str(v).strip()) if kind is not str else str(v).strip() for v in items]
    except ValueError:
        raise ConfigError(f"{name.replace('_', '-')} expects {kind.__name__} values, got {value!r}") from None
    parsed = [v for v in parsed if v != ""]
    if not parsed:
        raise ConfigError(f"{name.replace('_', '-')} is empty")
    return list(dict.fromkeys(parsed))  # keep order, drop repeats


def load_sweep_file(path: Path) -> dict[str, Any]:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"sweep file {path} does not exist") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        raise ConfigError(f"sweep file {path} is not valid TOML: {error}") from None
    unknown = set(data) - FILE_KEYS
    if unknown:
        raise ConfigError(f"sweep file {path}: unknown key(s) {', '.join(sorted(unknown))}")
    return data


def _parse_model_args(items: list[str]) -> dict[str, Any]:
    options = {}
    for item in items:
        key, sep, value = str(item).partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--model-arg expects KEY=VALUE, got {item!r}")
        try:
            options[key.strip()] = json.loads(value.strip())
        except json.JSONDecodeError:
            options[key.strip()] = value.strip()
    return options


def noise_level(value: Any) -> float | None:
    """``initial_noise``: a number >= 0, or inf (stored as None: the founding random order)."""
    if value is None:
        return None
    try:
        level = float(value)
    except ValueError:
        raise ConfigError(f"initial-noise must be a number or inf, got {value!r}") from None
    return None if level == float("inf") else level


def build_cells(settings: dict[str, Any]) -> list[CellConfig]:
    """Every cell of the sweep described by merged ``settings``, validated."""
    from rerankers import get_spec, list_models

    preset = profile(settings.get("profile", "default"))
    base = CellConfig(model="", **{k: v for k, v in preset.items() if k != "model_kwargs"})
    base = with_overrides(
        base,
        **{name: settings.get(name) for name in CELL_SETTINGS},
        initial_noise=noise_level(settings.get("initial_noise")),
    )
    models = list_models(",".join(parse_list(settings.get("models", "all"), str, "models")))
    seeds = settings.get("seeds", 1)
    if not isinstance(seeds, int) or seeds < 1:
        raise ConfigError(f"seeds must be a positive count, got {seeds!r}")
    first_seed = int(settings.get("seed", base.seed))
    axes: dict[str, list[Any]] = {"model": models, "seed": list(range(first_seed, first_seed + seeds))}
    for name in ("batch_size", "slate_length", "user_dim", "item_dim"):
        axes[name] = parse_list(settings.get(name, getattr(base.workload, name)), AXES[name], name)
    axes["loss"] = parse_list(settings.get("loss", base.train.loss), str, "loss")
    explicit_candidates = settings.get("candidates")
    ratio = float(settings.get("candidate_ratio") or base.workload.candidates / base.workload.slate_length)
    if ratio < 1:
        raise ConfigError(f"candidate-ratio must be at least 1, got {ratio:g}")

    model_options = dict(preset.get("model_kwargs", {}))
    explicit_options = _parse_model_args(settings.get("model_arg") or [])
    if settings.get("d_model") is not None:
        explicit_options["d_model"] = settings["d_model"]
    for name in explicit_options:
        if not any(name in get_spec(m).options() for m in models):
            raise ConfigError(f"no selected model takes the option {name!r}")
    model_options.update(explicit_options)

    candidate_lists = parse_list(explicit_candidates, int, "candidates") if explicit_candidates is not None else [None]
    cells = []
    for model, loss, batch_size, slate, user_dim, item_dim, seed, candidates in itertools.product(
        axes["model"],
        axes["loss"],
        axes["batch_size"],
        axes["slate_length"],
        axes["user_dim"],
        axes["item_dim"],
        axes["seed"],
        candidate_lists,
    ):
        accepted = get_spec(model).options()
        cell = with_overrides(
            replace(base, model=model),
            batch_size=batch_size,
            slate_length=slate,
            candidates=candidates if candidates is not None else max(slate, round(ratio * slate)),
            user_dim=user_dim,
            item_dim=item_dim,
            seed=seed,
            loss=loss,
            model_kwargs={k: v for k, v in model_options.items() if k in accepted},
        )
        validate(cell)
        cells.append(cell)
    return cells
