"""One flat row per cell, for pandas, spreadsheets and SQL: the latest record of each cell of a run.

Columns: the cell's identity (key, model, seed, status, device), its axes, then every metric and measurement the
records hold under the metric catalog's names (bench/catalog.py: ``slate_acc``, ``train_samples_per_s``...),
whose names carry their units (``_per_s`` samples/s, ``_ms``, ``_mib``), then, per timed value, the 95% interval
of its median (``<name>_ci_low``, ``<name>_ci_high``) and whether the cell ran contended.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd

from bench import catalog
from bench.records import latest_records
from bench.tables import AXIS_COLUMNS, PEAK_MEMORY, records_frame

FORMATS = ("csv", "parquet", "json")
IDENTITY = ("key", "model", "seed", "status", "error", "device")
LEFT_OUT = ("_record", "point", "variant", PEAK_MEMORY)  # the report's own columns, not the record's


def units() -> dict[str, str]:
    """Each catalog name's unit ('' for a fraction or a pure number): what `bench export --units` prints."""
    return {m.name: m.unit for m in catalog.entries()}


def _order(columns: list[str]) -> list[str]:
    """Identity, axes, the catalog's names in catalog order (a family such as ndcg@k by k), then the rest."""
    position = {m.name: i for i, m in enumerate(catalog.entries())}

    def rank(name: str) -> tuple[int, int, str]:
        entry = catalog.lookup(name)
        family = position.get(entry.name if entry and entry.name in position else f"{name.rpartition('@')[0]}@k")
        k = int(name.rpartition("@")[2]) if "@" in name and name.rpartition("@")[2].isdigit() else 0
        return (family if family is not None else len(position), k, name)

    first = [c for c in (*IDENTITY, *AXIS_COLUMNS) if c in columns]
    return first + sorted((c for c in columns if c not in first), key=rank)


def _timing_columns(record: dict[str, Any]) -> dict[str, Any]:
    """The 95% interval of each timed median, and the conditions' contention flag."""
    row: dict[str, Any] = {}
    timings = record.get("timings") or {}
    for entry in catalog.entries():
        summary = timings.get(entry.timing) if entry.timing and entry.quantile == 0.5 else None
        if summary:
            row[f"{entry.name}_ci_low"] = summary.get("ci_low")
            row[f"{entry.name}_ci_high"] = summary.get("ci_high")
    conditions = record.get("conditions") or {}
    row["contended"] = conditions.get("contended")
    row["contention"] = conditions.get("contention")
    return row


def cells_table(run_dir: Path) -> pd.DataFrame:
    """The latest record of every cell of ``run_dir`` as one flat row each."""
    records = latest_records(run_dir)
    if not records:
        return pd.DataFrame(columns=list(IDENTITY))
    frame = records_frame(records)
    extra = pd.DataFrame([_timing_columns(r) for r in records], index=frame.index)
    frame = pd.concat([frame.drop(columns=[c for c in LEFT_OUT if c in frame]), extra], axis=1)
    frame["run"] = run_dir.name
    frame["model_kwargs"] = [str(r["config"].get("model_kwargs") or {}) for r in records]
    return frame[_order(list(frame.columns))]


def write_table(frame: pd.DataFrame, path: Path, fmt: str) -> None:
    """``frame`` written to ``path`` as ``fmt`` (parquet needs pyarrow: check ``parquet_available`` first)."""
    if fmt == "csv":
        frame.to_csv(path, index=False)
    elif fmt == "json":  # the json module writes each float exactly (pandas rounds to 10 digits)
        rows = frame.astype(object).where(frame.notna(), None).to_dict(orient="records")
        path.write_text(json.dumps(rows, indent=1, default=str), encoding="utf-8")
    else:
        frame.to_parquet(path, index=False)


def parquet_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("pyarrow") is not None
