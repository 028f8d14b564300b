"""Result records: one JSON object per finished cell, appended to ``records.jsonl``.

The schema is documented in README.md ("Record schema"); bump SCHEMA_VERSION when a
field changes meaning.
"""

from __future__ import annotations

import base64
import json
import os
import platform
import subprocess
import warnings
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bench.config import CellConfig

SCHEMA_VERSION = 2  # 2: timings, conditions, per-phase memory and the cpu dropout (README, Record schema)
STATUSES = ("ok", "failed", "diverged", "oom", "timeout", "pruned")  # pruned: a tuning trial stopped early
RECORDS_FILE = "records.jsonl"


def pack_bits(hits: torch.Tensor) -> str:
    """Per-slate booleans as base64 of packed bits (compact; keeps paired tests possible)."""
    return base64.b64encode(np.packbits(hits.cpu().numpy().astype(bool)).tobytes()).decode()


def unpack_bits(text: str, count: int) -> np.ndarray:
    return np.unpackbits(np.frombuffer(base64.b64decode(text), dtype=np.uint8))[:count].astype(bool)


def slate_hits(record: dict[str, Any]) -> np.ndarray | None:
    """A record's per-slate hits (kept for its judged test slates), or None when it keeps none."""
    packed = (record.get("per_slate") or {}).get("slate_hits")
    metrics = record.get("metrics") or {}
    count = metrics.get("judged_slates", metrics.get("test_slates"))
    return unpack_bits(packed, count) if packed and count else None


def git_revision() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short=12", "HEAD"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=5,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment(device: torch.device, precision: str = "fp32", compiled: bool = False) -> dict[str, Any]:
    env: dict[str, Any] = {
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu": cpu_name(),
        "cpu_count": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "device": device.type,
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name(),
        "cuda": torch.version.cuda,
        "tf32_matmul": torch.backends.cuda.matmul.allow_tf32,
        "tf32_cudnn": torch.backends.cudnn.allow_tf32,
        "precision": precision,
        "amp": "bf16" if precision == "bf16" else None,
        "compile": compiled,
        "git_revision": git_revision(),
        # Other work on the machine distorts timings (CPU threads contend); recorded so it shows.
        "load_average_1min": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
    }
    return env


def append_record(path: Path, record: dict[str, Any]) -> None:
    """Append one complete line and force it to disk before returning."""
    path.parent.mkdir(parents=True, exist_ok=True)
    line = json.dumps(record, sort_keys=True, allow_nan=False) + "\n"
    with open(path, "a+b") as handle:
        handle.seek(0, os.SEEK_END)
        if handle.tell() > 0:
            handle.seek(-1, os.SEEK_END)
            if handle.read(1) != b"\n":
                # A torn line from a killed run: end it so it stays a lone skipped line
                # instead of swallowing this record.
                handle.write(b"\n")
        handle.write(line.encode("utf-8"))
        handle.flush()
        os.fsync(handle.fileno())


def load_records(path: Path) -> list[dict[str, Any]]:
    """Every complete record; a torn or corrupt line is reported and skipped."""
    records = []
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                warnings.warn(f"{path}:{number}: skipping an incomplete record line", stacklevel=2)
    return records


def json_safe(value: Any) -> Any:
    """NaN/inf become None so records stay strict JSON."""
    if isinstance(value, float) and not np.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def new_record(cell: CellConfig, status: str = "ok", error: str | None = None) -> dict[str, Any]:
    """A record with every field of the schema, before any result is filled in."""
    if status not in STATUSES:
        raise ValueError(f"unknown record status {status!r} (known: {', '.join(STATUSES)})")
    return {
        "schema": SCHEMA_VERSION,
        "key": cell.key(),
        "data_key": cell.data_key(),
        "model": cell.model,
        "model_properties": {},
        "config": cell.to_dict(),
        "status": status,
        "error": error,
        "metrics": {},
        "measurements": {},
        "history": {},
        "per_slate": {},
        "data": {},
        "environment": {},
        "timings": {},
        "conditions": {},
        "started_at": datetime.now(UTC).isoformat(),
        "finished_at": None,
    }


def latest_records(run_dir: Path) -> list[dict[str, Any]]:
    """The run's records, the latest one per cell (a forced re-run supersedes, never rewrites)."""
    path = run_dir / RECORDS_FILE
    records = load_records(path) if path.exists() else []
    return list({r["key"]: r for r in records}.values())
