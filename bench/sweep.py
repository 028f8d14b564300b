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

from bench.accel import resolve_device
from bench.config import (
    MAX_SEED,
    CellConfig,
    ConfigError,
    RunConfig,
    SweepConfig,
    profile,
    validate,
    with_overrides,
)
from bench.declare import Option
from bench.models import accepted_options, check_buildable
from bench.options import OPTIONS, axes, cell_scalars, check_settings, check_value, with_run_defaults
from bench.workloads import check_fits
from rerankers import get_spec, list_models

PARTS = "sweep"  # a sweep file's [[sweep]] tables: sub-sweeps, each a product of its own axes
PARTS_KEY = "sweep_parts"  # where the merged settings keep them (not an option: "sweep" is the file's path)
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
    parts = data.pop(PARTS, None)
    settings = check_settings(data, f"sweep file {path}")
    if parts is not None:
        settings[PARTS_KEY] = _checked_parts(parts, path)
    return settings


def _checked_parts(parts: Any, path: Path) -> list[dict[str, Any]]:
    """The file's ``[[sweep]]`` tables, each checked like the file's own keys; a run's settings (executor,
    timeout...) belong to the whole file, not to a part."""
    if not isinstance(parts, list) or not parts or not all(isinstance(part, dict) for part in parts):
        raise ConfigError(f"sweep file {path}: '{PARTS}' must be [[{PARTS}]] tables, each a product of axes")
    checked = []
    for number, part in enumerate(parts, 1):
        where = f"sweep file {path}, [[{PARTS}]] number {number}"
        whole_run = sorted(name for name in part if name in OPTIONS and OPTIONS[name].owner is RunConfig)
        if whole_run:
            raise ConfigError(f"{where}: {', '.join(whole_run)} applies to the whole run; set it outside [[{PARTS}]]")
        checked.append(check_settings(part, where))
    return checked


def with_parts_overridden(settings: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """``settings`` with ``overrides`` (the command line's values) over the file's keys and over each part's."""
    merged = {**settings, **overrides}
    if PARTS_KEY in settings:
        merged[PARTS_KEY] = [{**part, **overrides} for part in settings[PARTS_KEY]]
    return merged


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


def cell_value(option: Option, value: Any) -> Any:
    """A setting as the cell stores it: an ``allow_inf`` option's inf is None (initial_noise: the random order)."""
    if value is None or not option.allow_inf:
        return value
    try:
        number = float(value)
    except ValueError:
        raise ConfigError(f"{option.label} must be a number or inf, got {value!r}") from None
    if number != number:  # NaN
        raise ConfigError(f"{option.label} must be a number or inf, got {value!r}")
    return None if number == float("inf") else number


def _base_cell(sweep: SweepConfig, settings: dict[str, Any]) -> CellConfig:
    """The profile's cell with every single-valued setting applied."""
    preset = profile(sweep.profile)
    base = CellConfig(model="", **{k: v for k, v in preset.items() if k != "model_kwargs"})
    return with_overrides(base, **{o.name: cell_value(o, settings.get(o.name)) for o in cell_scalars()})


def _seeds(sweep: SweepConfig, settings: dict[str, Any], base: CellConfig) -> list[int]:
    first = int(settings.get("seed", base.seed))
    if first + sweep.seeds - 1 > MAX_SEED:
        raise ConfigError(f"seeds {first}..{first + sweep.seeds - 1} go beyond the largest seed, {MAX_SEED}")
    return list(range(first, first + sweep.seeds))


def _axis_values(sweep: SweepConfig, settings: dict[str, Any], base: CellConfig) -> dict[str, list[Any]]:
    """Each axis's values, in product order: models expand their patterns, candidates default to None (the
    candidate ratio x the slate length), the seeds axis counts from the first seed."""
    values: dict[str, list[Any]] = {}
    ranks: dict[str, int] = {"seed": SEED_RANK}
    for axis in axes():
        ranks[axis.name] = axis.axis  # type: ignore[assignment]
        if axis.name == "models":
            values["models"] = list_models(",".join(parse_list(sweep.models, str, "models")))
        elif axis.name == "candidates" and settings.get("candidates") is None:
            values["candidates"] = [None]
        else:
            given = settings.get(axis.name, _field_value(base, axis.name))
            values[axis.name] = check_value(axis.name, parse_list(given, axis.type, axis.name))
    values["seed"] = _seeds(sweep, settings, base)
    return {name: values[name] for name in sorted(values, key=ranks.__getitem__)}


def _model_options(sweep: SweepConfig, models: list[str]) -> dict[str, Any]:
    """The profile's model options, then --model-arg and --d-model; an option no selected model takes is an error."""
    explicit = _parse_model_args(sweep.model_arg)
    if sweep.d_model is not None:
        explicit["d_model"] = sweep.d_model
    for name in explicit:
        if not any(name in get_spec(m).options() for m in models):
            raise ConfigError(f"no selected model takes the option {name!r}")
    return {**profile(sweep.profile).get("model_kwargs", {}), **explicit}


def _models_for_data(models: list[str], named: list[str], data: str) -> list[str]:
    """The models that can run on the data: those that need the true utilities run only on synthetic data (named
    ones are an error elsewhere, those from 'all' or a pattern are left out)."""
    if data == "synthetic":
        return models
    blind = [m for m in models if get_spec(m).needs_utility and m in named]
    kept = [m for m in models if not get_spec(m).needs_utility]
    if blind or not kept:
        raise ConfigError(
            f"{', '.join(blind) or 'the selected models'} need(s) the true utilities of synthetic data; "
            f"--data {data} has none (leave it out of --models)"
        )
    return kept


def build_cells(settings: dict[str, Any]) -> list[CellConfig]:
    """Every cell of the sweep described by merged ``settings``, validated: the product of its axes or, for a file
    with ``[[sweep]]`` parts, each part's product (the part's keys over the file's), in order, a cell that two
    parts share once."""
    if PARTS_KEY not in settings:
        return _product_cells(settings)
    shared = {name: value for name, value in settings.items() if name != PARTS_KEY}
    cells: dict[str, CellConfig] = {}
    for part in settings[PARTS_KEY]:
        for cell in _product_cells({**shared, **part}):
            cells.setdefault(cell.key(), cell)
    return list(cells.values())


def _product_cells(settings: dict[str, Any]) -> list[CellConfig]:
    """Every cell of the product of the axes in merged ``settings``, validated."""
    sweep = SweepConfig.from_settings(settings)
    base = _base_cell(sweep, settings)
    if settings.get("candidates") is not None and sweep.candidate_ratio is not None:
        raise ConfigError("give --candidates or --candidate-ratio, not both (the ratio only sets default candidates)")
    ratio = sweep.candidate_ratio or base.workload.candidates / base.workload.slate_length
    values = _axis_values(sweep, settings, base)
    model_options = _model_options(sweep, values["models"])
    named = parse_list(sweep.models, str, "models")
    values["models"] = _models_for_data(values["models"], named, base.workload.data)
    seed_at = list(values).index("seed")
    seed_index = {seed: i for i, seed in enumerate(values["seed"])}
    # A point of the other axes is validated once and gives its cell for every seed (seeds are checked by _seeds;
    # nothing else depends on one).
    by_seed: dict[tuple[Any, ...], list[CellConfig]] = {}
    cells = []
    for point in itertools.product(*values.values()):
        others = point[:seed_at] + point[seed_at + 1 :]
        row = by_seed.get(others)
        if row is None:
            cell = _point_cell(base, dict(zip(values, point, strict=True)), ratio, model_options)
            row = by_seed[others] = cell.with_seeds(values["seed"])
        cells.append(row[seed_index[point[seed_at]]])
    return cells


def _point_cell(base: CellConfig, overrides: dict[str, Any], ratio: float, model_options: dict[str, Any]) -> CellConfig:
    """The cell of one point of the sweep's axes, validated, its data checked against this machine's memory."""
    model = overrides.pop("models")
    if overrides["candidates"] is None:
        overrides["candidates"] = max(overrides["slate_length"], round(ratio * overrides["slate_length"]))
    options = accepted_options(model, model_options)
    cell = with_overrides(replace(base, model=model), **overrides, model_kwargs=options)
    validate(cell)
    check_fits(cell.workload)
    return cell


def _field_value(cell: CellConfig, name: str) -> Any:
    for holder in (cell.workload, cell.train, cell.measure, cell):
        if hasattr(holder, name):
            return getattr(holder, name)
    raise KeyError(name)


def run_settings(settings: dict[str, Any]) -> dict[str, Any]:
    """Merged settings as `bench run` takes them: completed with its run defaults, the device resolved."""
    settings = with_run_defaults(settings)
    settings["device"] = resolve_device(settings["device"])
    return settings


def checked_cells(settings: dict[str, Any]) -> list[CellConfig]:
    """Every cell of ``run_settings``, validated, and each model buildable with its options on this machine."""
    cells = build_cells(settings)
    checked = set()  # a model is built once per options and feature sizes, not once per seed
    for cell in cells:
        w = cell.workload
        what = (cell.model, json.dumps(cell.model_kwargs, sort_keys=True, default=str), w.user_dim, w.item_dim)
        if what not in checked:
            check_buildable(cell)
            checked.add(what)
    return cells


def plan(settings: dict[str, Any]) -> tuple[RunConfig, list[CellConfig]]:
    """Merged settings -> the run's own configuration and every cell, all checked; nothing runs, and no executor
    is built (``runner.make_executor`` checks the executor's own needs)."""
    settings = run_settings(settings)
    run = RunConfig.from_settings(settings)
    run = replace(run, baseline=get_spec(run.baseline).name)
    return run, checked_cells(settings)
