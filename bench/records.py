"""Result records: one JSON object per finished cell, appended to ``records.jsonl``.

``new_record`` lists every field of a record; the metric catalog (bench/catalog.py) says what each value in
``metrics`` and ``measurements`` is. Bump SCHEMA_VERSION when a field changes meaning.
"""

from __future__ import annotations

import base64
import errno
import fcntl
import json
import os
import platform
import stat
import subprocess
import warnings
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bench.catalog import Metric
from bench.config import CellConfig
from bench.errors import ConfigError
from bench.stats import paired_values, slate_estimate

# What each version added, so that a reader knows what an older record lacks: 2, timings, conditions, per-phase
# memory and the cpu dropout; 3, inference blocks spread over the cell with the latency requests (serving_bursts).
SCHEMA_VERSION = 3
# Every status a record can carry, each only with evidence: oom needs an allocation failure or the kernel's OOM
# counter; killed is a worker ended by a signal without such evidence; pruned is a tuning trial stopped early.
STATUSES = ("ok", "failed", "diverged", "oom", "timeout", "killed", "pruned")
RECORDS_FILE = "records.jsonl"
# Messages of an allocation that failed: CUDA's and torch's CPU allocator, the C library, Python.
ALLOCATION_FAILURES = ("out of memory", "can't allocate memory", "cannot allocate memory", "memoryerror")


def is_allocation_failure(text: str) -> bool:
    """Whether an error text (or a worker's log) says that an allocation failed: evidence of ``oom``."""
    lowered = text.lower()
    return any(message in lowered for message in ALLOCATION_FAILURES)


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


# Per-slate values (``pack_values``): IEEE half precision, little-endian, where every value fits in its range (up to
# 65504), else single precision. Half precision keeps 11 significant bits: each value to within 2^-12 (0.025%) of
# itself, with errors that average out over slates, while an interval over n test slates is 1.96 sd / sqrt(n) wide.
# At the default profile (8192 slates, the diversity world) this moved half-widths by under 1e-5 of themselves,
# means and paired differences by under 1e-3 of their half-width and paired p-values by under 1%
# (tests/test_slate_values.py checks 1e-3), at 2 bytes a slate: 22 kB of base64 per value for 8192 slates.
VALUE_DTYPES = (np.dtype("<f2"), np.dtype("<f4"))


def pack_values(values: torch.Tensor) -> str:
    """Per-slate numbers as base64 of half-precision floats (single precision where one would not fit)."""
    array = values.detach().cpu().double().numpy()
    fits = not (np.abs(array[np.isfinite(array)]) > np.finfo(VALUE_DTYPES[0]).max).any()
    return base64.b64encode(array.astype(VALUE_DTYPES[0 if fits else 1]).tobytes()).decode()


def pack_per_slate(per_slate: dict[str, torch.Tensor]) -> dict[str, str]:
    """A record's ``per_slate``: booleans (slate_hits) as packed bits, numbers as ``pack_values``."""
    return {name: pack_bits(v) if v.dtype == torch.bool else pack_values(v) for name, v in per_slate.items()}


def unpack_values(text: str, count: int) -> np.ndarray:
    """float64 [count] from ``pack_values``; its precision is read off the length (2 or 4 bytes a value)."""
    raw = base64.b64decode(text)
    dtype = next((d for d in VALUE_DTYPES if d.itemsize * count == len(raw)), None)
    if dtype is None:
        raise ValueError(f"{len(raw)} bytes are not {count} half- or single-precision values")
    return np.frombuffer(raw, dtype=dtype).astype(np.float64)


def slate_values(record: dict[str, Any], name: str) -> np.ndarray | None:
    """A record's per-slate ``name`` (e.g. slate_regret), one value per test slate, or None when it keeps none."""
    packed = (record.get("per_slate") or {}).get(name)
    count = (record.get("metrics") or {}).get("test_slates")
    return unpack_values(packed, count) if packed and count else None


def metric_slates(record: dict[str, Any], metric: Metric) -> tuple[np.ndarray, np.ndarray | None] | None:
    """The per-slate values a metric is made of (its catalog ``per_slate``): (numerator, denominator or None), or
    None when the record keeps none."""
    if metric.per_slate is None:
        return None
    numerator, denominator = metric.per_slate
    values = slate_values(record, numerator)
    below = slate_values(record, denominator) if denominator else None
    return None if values is None or (denominator and below is None) else (values, below)


def slate_interval(record: dict[str, Any], metric: Metric) -> float | None:
    """The 95% half-width over its test slates of a record's value made of per-slate values; None without them."""
    slates = metric_slates(record, metric)
    return slate_estimate(*slates)[1] if slates is not None else None


def paired_slate_values(a: dict[str, Any], b: dict[str, Any], metric: Metric) -> tuple[float, float, float] | None:
    """Record ``a``'s value minus ``b``'s, its 95% half-width and the paired t-test's p over the same test slates
    (``stats.paired_values``); None unless both keep the per-slate values of the same data (``data_key``)."""
    slates_a, slates_b = metric_slates(a, metric), metric_slates(b, metric)
    if slates_a is None or slates_b is None or a.get("data_key") != b.get("data_key"):
        return None
    if len(slates_a[0]) != len(slates_b[0]):
        return None
    return paired_values(slates_a[0], slates_b[0], slates_a[1])


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
    if device.type == "cuda":
        from bench.gpu_info import gpu_environment

        env.update(gpu_environment(device))
    return env


def append_record(path: Path, record: dict[str, Any]) -> None:
    """Append one complete line and force it to disk before returning.

    A failed write (disk full, file gone read-only) cuts the file back to its previous length, so no torn line
    is left behind, and raises ``RecordWriteError``.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    line = json.dumps(record, sort_keys=True, allow_nan=False) + "\n"
    try:
        handle = open(path, "a+b", buffering=0)  # noqa: SIM115 - closed below; unbuffered: a failure is seen here
    except OSError as error:
        raise RecordWriteError(error.errno, f"cannot open {path}: {error.strerror}") from None
    with handle:
        handle.seek(0, os.SEEK_END)
        start = handle.tell()
        try:
            if start > 0:
                handle.seek(-1, os.SEEK_END)
                if handle.read(1) != b"\n":
                    # A torn line from a killed run: end it so it stays a lone skipped line
                    # instead of swallowing this record.
                    handle.write(b"\n")
            data = memoryview(line.encode("utf-8"))
            while data:
                data = data[handle.write(data) :]
            os.fsync(handle.fileno())
        except OSError as error:
            try:
                handle.truncate(start)
            except OSError:
                pass
            raise RecordWriteError(error.errno, f"cannot append to {path}: {error.strerror}") from None


# The config fields that readers (report, compare) take from every record; every version has written them.
CONFIG_READ = ("seed", "device", "model_kwargs")
WORKLOAD_READ = ("batch_size", "slate_length", "candidates", "user_dim", "item_dim")


def _record_problem(value: Any, need_metrics: bool = True) -> str | None:
    """Why a parsed line is not a record this version can use (None when it is one). An ``ok`` record must hold
    its metrics (every version writes slate_acc, null when no slate was judged) unless not ``need_metrics``."""
    if not isinstance(value, dict):
        return f"not a record (a JSON {type(value).__name__})"
    if not isinstance(value.get("key"), str) or not value["key"]:
        return "a record without a key"
    if not isinstance(value.get("status"), str):
        return "a record without a status"
    if not isinstance(value.get("model"), str):
        return "a record without a model name"
    for section in ("metrics", "measurements"):
        if not isinstance(value.get(section, {}), dict):
            return f"{section} is not an object"
    config = value.get("config")
    if not isinstance(config, dict) or not all(isinstance(config.get(g), dict) for g in ("workload", "train")):
        return "a record without its config"
    missing = [f"config.{name}" for name in CONFIG_READ if name not in config]
    missing += [f"config.workload.{name}" for name in WORKLOAD_READ if name not in config["workload"]]
    missing += [] if "loss" in config["train"] else ["config.train.loss"]
    if missing:
        return f"a record whose config lacks {', '.join(missing)}"
    if need_metrics and value["status"] == "ok" and "slate_acc" not in value.get("metrics", {}):
        return "an ok record without its metrics (no slate_acc)"
    return None


def metrics_optional(value: Any) -> str | None:
    """``_record_problem`` for a reader that handles an ok record without metrics itself (`bench compare`)."""
    return _record_problem(value, need_metrics=False)


FILE_KINDS = {
    stat.S_IFLNK: "a symbolic link",
    stat.S_IFIFO: "a FIFO",
    stat.S_IFSOCK: "a socket",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
}


def check_regular(path: Path) -> bool:
    """Whether ``path`` exists; a ConfigError when it is not a regular file of its own (a symbolic link to another
    run's records, a FIFO that would block every reader, a device): a run's records belong to that run alone."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return False
    except OSError as error:
        raise ConfigError(f"cannot read {path}: {error.strerror or error}") from None
    kind = FILE_KINDS.get(stat.S_IFMT(mode))
    if kind is not None:  # a directory is left to open(), whose error names it
        raise ConfigError(f"{path} is {kind}, not a regular file: a run's records file must be the run's own file")
    return True


def load_records(path: Path, problem: Callable[[Any], str | None] | None = None) -> list[dict[str, Any]]:
    """Every usable record; any other line (torn, not JSON, not UTF-8, not a record) is reported and skipped.
    ``problem`` says why a parsed line is not a record (default: a cell record's checks).

    A file that cannot be read at all (no permission) or is not a regular file (``check_regular``) is a
    ``ConfigError`` naming it.
    """
    problem_of = problem or _record_problem
    try:
        check_regular(path)
        with open(path, "rb") as handle:
            lines = handle.read().split(b"\n")
    except OSError as error:
        raise ConfigError(f"cannot read {path}: {error.strerror or error}") from None
    records = []
    for number, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        try:
            value = json.loads(raw.decode("utf-8"))
        except UnicodeDecodeError:
            why = "not UTF-8 text"
        except json.JSONDecodeError:
            why = "an incomplete record line"
        else:
            why = problem_of(value)
        if why is None:
            records.append(value)
        else:
            warnings.warn(f"{path}:{number}: skipping {why}", stacklevel=2)
    return records


def check_writable(run_dir: Path, records_file: str = RECORDS_FILE) -> None:
    """Create ``run_dir`` and open its records file for appending, before any compute: a ConfigError if not."""
    path = run_dir / records_file
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        check_regular(path)
        with open(path, "ab"):
            pass
        probe = run_dir / f".write-check-{os.getpid()}"
        with open(probe, "wb") as handle:  # the report and lock live beside the records
            handle.write(b"x")
        probe.unlink()
    except OSError as error:
        where = error.filename or path
        raise ConfigError(f"cannot write the run's records in {run_dir}: {where}: {error.strerror or error}") from None


class RecordWriteError(OSError):
    """A finished cell's record could not be written (disk full, file gone read-only); the file is left whole."""


_held_locks: dict[Path, list[Any]] = {}  # run directory -> [open lock file, holders in this process]
LOCK_FILE = ".lock"


class RunLock:
    """An advisory lock on a run directory (``fcntl.flock`` on ``RUN/.lock``), re-entrant within a process.

    A second process that wants the same directory gets a ``ConfigError`` naming the holder's pid, so two runs
    never compute (and record) the same cells at the same time.
    """

    def __init__(self, run_dir: Path):
        self.run_dir = Path(run_dir).resolve()

    def __enter__(self) -> RunLock:
        held = _held_locks.get(self.run_dir)
        if held is not None:
            held[1] += 1
            return self
        path = self.run_dir / LOCK_FILE
        try:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            handle = open(path, "a+")  # noqa: SIM115 - held until __exit__
        except OSError as error:
            raise ConfigError(f"cannot lock the run directory {self.run_dir}: {error.strerror or error}") from None
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            handle.seek(0)
            holder = handle.read().strip() or "unknown"
            if error.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS):
                handle.close()
            if error.errno in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS):  # a file system without locks
                warnings.warn(
                    f"{path}: this file system does not support locks ({error.strerror}); "
                    "make sure no other run uses this directory",
                    stacklevel=2,
                )
                _held_locks[self.run_dir] = [handle, 1]
                return self
            if error.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise ConfigError(
                    f"run directory {self.run_dir} is in use by another bench process (pid {holder}); "
                    "wait for it to finish or choose another --run-id"
                ) from None
            raise ConfigError(f"cannot lock the run directory {self.run_dir}: {error.strerror or error}") from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        _held_locks[self.run_dir] = [handle, 1]
        return self

    def __exit__(self, *exc: Any) -> None:
        held = _held_locks[self.run_dir]
        held[1] -= 1
        if held[1] == 0:
            del _held_locks[self.run_dir]
            held[0].close()  # closing releases the flock


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


def latest_records(run_dir: Path, problem: Callable[[Any], str | None] | None = None) -> list[dict[str, Any]]:
    """The run's records, the latest one per cell (a forced re-run supersedes, never rewrites); ``problem`` as
    for ``load_records``."""
    path = run_dir / RECORDS_FILE
    records = load_records(path, problem) if check_regular(path) else []
    return list({r["key"]: r for r in records}.values())
