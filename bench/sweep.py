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

from bench.config import MAX_SEED, CellConfig, ConfigError, RunConfig, profile, validate, with_overrides
from bench.options import axes, cell_scalars, check_settings, check_value

SEED_RANK = 70  # the seeds axis (seed, seed+1, ...) sits between the item-dim and candidates axes


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
    except IsADirectoryError:
        raise ConfigError(f"sweep file {path} is a directory, not a TOML file") from None
    except OSError as error:
        raise ConfigError(f"cannot read sweep file {path}: {error.strerror or error}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        raise ConfigError(f"sweep file {path} is not valid TOML: {error}") from None
    return check_settings(data, f"sweep file {path}")


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
    if level != level:  # NaN
        raise ConfigError(f"initial-noise must be a number or inf, got {value!r}")
    return None if level == float("inf") else level


def build_cells(settings: dict[str, Any]) -> list[CellConfig]:
    """Every cell of the sweep described by merged ``settings``, validated."""
    from rerankers import get_spec, list_models

    preset = profile(settings.get("profile", "default"))
    base = CellConfig(model="", **{k: v for k, v in preset.items() if k != "model_kwargs"})
    base = with_overrides(
        base,
        **{name: settings.get(name) for name in cell_scalars()},
        initial_noise=noise_level(settings.get("initial_noise")),
    )
    seeds = settings.get("seeds", 1)
    if not isinstance(seeds, int) or seeds < 1:
        raise ConfigError(f"seeds must be a positive count, got {seeds!r}")
    first_seed = int(settings.get("seed", base.seed))
    if first_seed + seeds - 1 > MAX_SEED:
        raise ConfigError(f"seeds {first_seed}..{first_seed + seeds - 1} go beyond the largest seed, {MAX_SEED}")
    if settings.get("candidates") is not None and settings.get("candidate_ratio") is not None:
        raise ConfigError("give --candidates or --candidate-ratio, not both (the ratio only sets default candidates)")
    ratio = float(settings.get("candidate_ratio") or base.workload.candidates / base.workload.slate_length)
    if ratio < 1:
        raise ConfigError(f"candidate-ratio must be at least 1, got {ratio:g}")

    # Each axis: its values, in product order. models expands globs; candidates default to ratio x T.
    values: dict[str, list[Any]] = {}
    ranks: dict[str, int] = {"seed": SEED_RANK}
    for axis in axes():
        ranks[axis.name] = axis.axis
        if axis.name == "models":
            named = parse_list(settings.get("models", "all"), str, "models")
            values["models"] = list_models(",".join(named))
        elif axis.name == "candidates":
            given = settings.get("candidates")
            values["candidates"] = (
                check_value("candidates", parse_list(given, int, "candidates")) if given is not None else [None]
            )
        else:
            default = _field_value(base, axis.name)
            given = parse_list(settings.get(axis.name, default), axis.type, axis.name)
            values[axis.name] = check_value(axis.name, given)
    values["seed"] = list(range(first_seed, first_seed + seeds))
    order = sorted(values, key=ranks.__getitem__)
    models = values["models"]

    model_options = dict(preset.get("model_kwargs", {}))
    explicit_options = _parse_model_args(settings.get("model_arg") or [])
    if settings.get("d_model") is not None:
        explicit_options["d_model"] = settings["d_model"]
    for name in explicit_options:
        if not any(name in get_spec(m).options() for m in models):
            raise ConfigError(f"no selected model takes the option {name!r}")
    model_options.update(explicit_options)
    if base.workload.data != "synthetic":
        # Models that need the true utilities cannot run on real data: named ones are an error, those that
        # came from 'all' or a pattern are left out.
        blind = [m for m in models if get_spec(m).needs_utility and m in named]
        models = values["models"] = [m for m in models if not get_spec(m).needs_utility]
        if blind or not models:
            raise ConfigError(
                f"{', '.join(blind) or 'the selected models'} need(s) the true utilities of synthetic data; "
                f"--data {base.workload.data} "
                "has none (leave it out of --models)"
            )

    cells = []
    for point in itertools.product(*(values[name] for name in order)):
        overrides = dict(zip(order, point, strict=True))
        model = overrides.pop("models")
        if overrides["candidates"] is None:
            overrides["candidates"] = max(overrides["slate_length"], round(ratio * overrides["slate_length"]))
        accepted = get_spec(model).options()
        cell = with_overrides(
            replace(base, model=model),
            **overrides,
            model_kwargs={k: v for k, v in model_options.items() if k in accepted},
        )
        validate(cell)
        cells.append(cell)
    return cells


def _field_value(cell: CellConfig, name: str) -> Any:
    for holder in (cell.workload, cell.train, cell.measure, cell):
        if hasattr(holder, name):
            return getattr(holder, name)
    raise KeyError(name)


def plan(settings: dict[str, Any]) -> tuple[RunConfig, list[CellConfig]]:
    """Merged settings -> the run's own configuration and every cell, all validated (nothing runs yet)."""
    run = RunConfig.from_settings(settings)
    from rerankers import get_spec

    run = replace(run, baseline=get_spec(run.baseline).name)
    if run.executor == "ray":
        from bench.ray_executor import check_reachable, require_ray

        require_ray()
        check_reachable(run.ray_address)
    if settings.get("data") == "letor" and "labels" not in settings:
        settings = {**settings, "labels": "graded"}
    return run, build_cells(settings)
