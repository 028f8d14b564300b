"""The hardening battery (issue 13): bad input, bad files, faults and signals, one class after another.

Every case is smoke-sized: cells that must run use the inline executor and a few tiny batches; the rest are
refused before any compute, which is what they check.
"""

from __future__ import annotations

import contextlib
import errno
import io
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from bench import letor
from bench.cli import app
from bench.commands.common import shown
from bench.config import PROFILES, CellConfig
from bench.records import (
    STATUSES,
    RecordWriteError,
    RunLock,
    append_record,
    load_records,
    new_record,
)

ROOT = Path(__file__).resolve().parents[1]
runner = CliRunner()
# The smallest run that still trains, evaluates and reports: a few seconds per cell.
TINY = (
    "--profile",
    "smoke",
    "--batches",
    "2",
    "--epochs",
    "1",
    "--batch-size",
    "32",
    "--valid-slates",
    "64",
    "--test-slates",
    "64",
    "--executor",
    "inline",
)


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def assert_refused(result, message: str) -> None:
    """One `error:` line naming the problem, exit 2, no traceback."""
    assert result.exit_code == 2, result.output
    assert message in result.stderr, result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("error: ")
    assert "Traceback" not in result.output
    assert not isinstance(result.exception, Exception) or isinstance(result.exception, SystemExit)


def tiny_run(out: Path, *extra, models: str = "mlp"):
    return invoke("run", "--models", models, *TINY, "--out", out, *extra)


@pytest.fixture(scope="module")
def template():
    """One real record of a tiny cell: the others are copies with another seed (and key)."""
    from dataclasses import replace

    from bench.cell import run_cell

    smoke = {k: v for k, v in PROFILES["smoke"].items() if k != "model_kwargs"}
    cell = CellConfig(model="mlp", **smoke)
    cell = replace(cell, workload=replace(cell.workload, batches=2), train=replace(cell.train, epochs=1))
    record = run_cell(cell)
    assert record["status"] == "ok", record["error"]
    TEMPLATE.update(cell=cell, record=record)


TEMPLATE: dict = {}


def record_of(seed: int = 0, status: str = "ok", bare: bool = False, **metrics) -> dict:
    """A record of the template's cell with ``seed`` (``bare``, or without the template: only ``metrics``)."""
    from dataclasses import replace

    if bare or not TEMPLATE:
        smoke = {k: v for k, v in PROFILES["smoke"].items() if k != "model_kwargs"}
        record = new_record(replace(CellConfig(model="mlp", **smoke), seed=seed), status)
        record["metrics"] = metrics
        return record
    cell = replace(TEMPLATE["cell"], seed=seed)
    record = json.loads(json.dumps(TEMPLATE["record"]))
    record.update(key=cell.key(), data_key=cell.data_key(), config=cell.to_dict(), status=status)
    if metrics:
        record["metrics"].update(metrics)
    return record


def write_records(run_dir: Path, records: list[dict]) -> Path:
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / "records.jsonl"
    for record in records:
        append_record(path, record)
    return path


# --- 1. a cell with no judged test slates -----------------------------------------------------


@pytest.mark.parametrize("value", [None, float("nan"), float("inf"), "x"])
def test_missing_values_show_as_na(value):
    assert shown(value, ".3f") == "n/a"
    assert shown(0.5, ".3f") == "0.500"


def test_a_cell_without_judged_slates_does_not_stop_the_sweep(tmp_path):
    # Examination 1/rank^1000: only the top item is ever seen; with one test slate some seeds judge none.
    result = invoke(
        "run",
        "--models",
        "mlp",
        *TINY,
        "--click-model",
        "position-biased",
        "--eta",
        "1000",
        "--test-slates",
        "1",
        "--seeds",
        "4",
        "--out",
        tmp_path,
        "--run-id",
        "r",
    )
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    records = load_records(tmp_path / "r" / "records.jsonl")
    assert len(records) == 4, "every seed ran"
    unjudged = [r for r in records if r["metrics"].get("judged_slates") == 0]
    assert unjudged and all(r["metrics"]["slate_acc"] is None for r in unjudged)
    assert "slate_acc n/a" in result.stderr
    assert (tmp_path / "r" / "report.md").is_file()
    assert result.exit_code == 0, result.output


def letor_lines(queries: int, first_qid: int, relevant: bool = True) -> list[str]:
    lines = []
    for q in range(queries):
        for d in range(6):
            label = (d % 3) if relevant else 0
            lines.append(f"{label} qid:{first_qid + q} 1:{0.1 * d + 0.01 * q:.3f} 2:{0.5 - 0.05 * d:.3f} 3:{q % 4}")
    return lines


# --- 2. the output location is checked before any compute ---------------------------------------


def _out_is_a_file(tmp_path):
    (tmp_path / "file").write_text("x")
    return [tmp_path / "file"]


def _records_is_a_directory(tmp_path):
    (tmp_path / "r" / "records.jsonl").mkdir(parents=True)
    return [tmp_path, "--run-id", "r"]


def _read_only_dir(tmp_path):
    (tmp_path / "ro").mkdir()
    (tmp_path / "ro").chmod(0o500)
    return [tmp_path / "ro"]


@pytest.mark.parametrize(
    "where",
    [
        _out_is_a_file,
        _records_is_a_directory,
        lambda tmp_path: [Path("/proc/rerank-bench-test")],
        pytest.param(_read_only_dir, marks=pytest.mark.skipif(os.geteuid() == 0, reason="root writes anywhere")),
        "read-only file system",
    ],
)
def test_unwritable_output_is_refused_before_any_cell(tmp_path, where, monkeypatch):
    """Permission bits do not bind root (CI runs as root), a read-only mount does: that case is simulated below
    the code, where the file system answers (``read_only_file_system``), and runs for every user."""
    import bench.executor

    monkeypatch.setattr(bench.executor.InlineExecutor, "run", lambda *a: pytest.fail("a cell ran"))
    if where == "read-only file system":
        (tmp_path / "ro").mkdir()
        read_only_file_system(monkeypatch, tmp_path / "ro")
        out, extra = tmp_path / "ro", []
        assert_refused(tiny_run(out), "Read-only file system")
        assert list(out.iterdir()) == [], "nothing was written"
        return
    out, *extra = where(tmp_path)
    # the records file is read (for resume) before it is written: a directory in its place is named there
    expected = "records.jsonl: Is a directory" if where is _records_is_a_directory else "cannot write the run's records"
    assert_refused(tiny_run(out, *extra), expected)


def read_only_file_system(monkeypatch, root: Path) -> None:
    """Every write under ``root`` fails with EROFS, as on a file system mounted read-only: creating a directory
    (``os.mkdir``, behind ``Path.mkdir``) and opening a file for writing (``open``, ``io.open``, ``os.open``).
    Reads pass. The code under test runs unchanged: only the operating system's answer is replaced."""
    import builtins
    import io

    top = os.path.abspath(root)
    real_open, real_os_open, real_mkdir = builtins.open, os.open, os.mkdir

    def under(path) -> bool:
        if not isinstance(path, (str, bytes, os.PathLike)):
            return False  # a file descriptor
        where = os.path.abspath(os.fsdecode(path))
        return where == top or where.startswith(top + os.sep)

    def refuse(path):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), os.fsdecode(path))

    def open_(file, mode="r", *args, **kwargs):
        if under(file) and any(c in mode for c in "wax+"):
            refuse(file)
        return real_open(file, mode, *args, **kwargs)

    def os_open(path, flags, *args, **kwargs):
        writes = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC
        if under(path) and flags & writes:
            refuse(path)
        return real_os_open(path, flags, *args, **kwargs)

    def mkdir(path, *args, **kwargs):
        if under(path):
            refuse(path)
        return real_mkdir(path, *args, **kwargs)

    for module, name, fake in ((builtins, "open", open_), (io, "open", open_), (os, "open", os_open)):
        monkeypatch.setattr(module, name, fake)
    monkeypatch.setattr(os, "mkdir", mkdir)


def test_a_read_only_records_file_is_refused_before_any_cell(tmp_path, monkeypatch):
    """Root writes through chmod, so the refusal of the file system is simulated where the file is opened."""
    import builtins

    import bench.executor
    import bench.records

    def read_only(path, mode="r", *args, **kwargs):
        if str(path).endswith("records.jsonl") and any(c in mode for c in "aw+"):
            raise PermissionError(errno.EROFS, "Read-only file system", str(path))
        return builtins.open(path, mode, *args, **kwargs)

    monkeypatch.setattr(bench.records, "open", read_only, raising=False)
    monkeypatch.setattr(bench.executor.InlineExecutor, "run", lambda *a: pytest.fail("a cell ran"))
    assert_refused(tiny_run(tmp_path, "--run-id", "r"), "Read-only file system")


def test_a_full_disk_leaves_no_torn_line(template, tmp_path, monkeypatch):
    import bench.records

    path = write_records(tmp_path, [record_of(seed=0)])
    before = path.read_bytes()

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(bench.records.os, "fsync", full)
    with pytest.raises(RecordWriteError, match="No space left"):
        append_record(path, record_of(seed=1))
    assert path.read_bytes() == before, "the failed append was cut back"
    with pytest.raises(RecordWriteError):
        append_record(Path("/dev/full"), record_of(seed=1))


class FillingFile(io.FileIO):
    """A file on a disk that fills up while a record is written: the first write stores half of its bytes (a short
    write, as write(2) returns when the disk fills partway), every later one fails with ENOSPC."""

    full = False

    def write(self, data) -> int:
        if self.full:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self.full = True
        return super().write(bytes(data)[: len(data) // 2])


def test_a_full_disk_mid_run_is_one_error_line(tmp_path, monkeypatch):
    """Through the CLI and the real append path: the disk fills while the second cell's record is written; the file
    is cut back to the first record's line, the run ends with one `error:` line (exit 1), a re-run computes only
    the second cell."""
    import builtins

    import bench.records

    appends = []

    def open_(path, mode="r", *args, **kwargs):
        if str(path).endswith("records.jsonl") and mode == "a+b":  # append_record's open
            appends.append(Path(path).read_bytes() if Path(path).exists() else b"")
            if len(appends) == 2:
                return FillingFile(path, "a+")
        return builtins.open(path, mode, *args, **kwargs)

    monkeypatch.setattr(bench.records, "open", open_, raising=False)
    result = tiny_run(tmp_path, "--run-id", "r", "--seeds", "2")
    assert result.exit_code == 1, result.output
    # one error, which the console may wrap over several lines of its width
    assert result.stderr.count("error:") == 1, result.stderr
    error = " ".join(result.stderr[result.stderr.index("error:") :].split())
    assert error.startswith("error: cannot append to ")
    assert "No space left on device; the records file is whole" in error
    assert "Traceback" not in result.output
    path = tmp_path / "r" / "records.jsonl"
    assert len(appends) == 2 and path.read_bytes() == appends[1], "cut back to its last whole line"
    (kept,) = load_records(path)
    monkeypatch.undo()
    again = tiny_run(tmp_path, "--run-id", "r", "--seeds", "2")
    assert again.exit_code == 0, again.output
    records = load_records(path)
    assert len(records) == 2 and records[0] == kept and records[1]["key"] != kept["key"]


# --- 3. one run per run directory -----------------------------------------------------------------


def test_a_locked_run_directory_is_refused_naming_the_holder(tmp_path):
    run_dir = tmp_path / "r"
    run_dir.mkdir()
    # Another process holds the lock, as a concurrent `bench run --run-id r` would.
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import fcntl, os, sys, time\n"
            "f = open(sys.argv[1], 'a+'); fcntl.flock(f, fcntl.LOCK_EX)\n"
            "f.seek(0); f.truncate(); f.write(str(os.getpid())); f.flush(); print('held', flush=True)\n"
            "time.sleep(60)",
            str(run_dir / ".lock"),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        result = tiny_run(tmp_path, "--run-id", "r")
        assert_refused(result, f"in use by another bench process (pid {holder.pid})")
        tune = invoke("tune", "--models", "mlp", *TINY[:-2], "--trials", "1", "--out", tmp_path, "--run-id", "r")
        assert_refused(tune, f"pid {holder.pid}")
        assert not (run_dir / "records.jsonl").exists() or not load_records(run_dir / "records.jsonl")
    finally:
        holder.kill()
        holder.wait()
    # Released: the run goes ahead, and the lock is re-entrant within one process (bench tune).
    with RunLock(run_dir), RunLock(run_dir):
        pass
    assert tiny_run(tmp_path, "--run-id", "r").exit_code == 0


def test_two_concurrent_runs_never_duplicate_a_key(tmp_path):
    args = [sys.executable, "-m", "bench.cli", "run", "--models", "mlp", *TINY, "--seeds", "2"]
    args += ["--out", str(tmp_path), "--run-id", "r"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    runs = [subprocess.Popen(args, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)]
    time.sleep(0.5)
    runs.append(subprocess.Popen(args, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    outcomes = [(p.wait(timeout=240), p.stderr.read()) for p in runs]
    codes = sorted(code for code, _ in outcomes)
    keys = [r["key"] for r in load_records(tmp_path / "r" / "records.jsonl")]
    assert len(keys) == len(set(keys)) == 2, outcomes
    # Either the second waited for nothing (the first had finished: it skipped) or it was refused.
    assert codes in ([0, 0], [0, 2]), outcomes
    if codes == [0, 2]:
        assert any("in use by another bench process" in err for _, err in outcomes)


# --- 4. statuses tell the truth; resume retries what did not finish --------------------------------


def test_killed_is_not_oom_and_an_allocation_failure_is(tmp_path, faulty_plugin, monkeypatch):
    import bench.executor

    assert "killed" in STATUSES
    no_oom = {"/proc/vmstat": 3}
    monkeypatch.setattr(bench.executor, "oom_kill_counts", lambda: dict(no_oom))
    result = invoke(
        "run",
        "--models",
        "test-self-kill,test-alloc-fails",
        *TINY,
        "--executor",
        "process",
        "--out",
        tmp_path,
        "--run-id",
        "r",
    )
    assert result.exit_code == 1, result.output
    records = {r["model"]: r for r in load_records(tmp_path / "r" / "records.jsonl")}
    assert records["test-self-kill"]["status"] == "killed", records["test-self-kill"]["error"]
    assert "signal 9" in records["test-self-kill"]["error"]
    assert records["test-alloc-fails"]["status"] == "oom", records["test-alloc-fails"]["error"]
    # The same kill with the kernel's OOM-kill counter going up is an oom, with the evidence in the error.
    readings = iter([{"/proc/vmstat": 3}, {"/proc/vmstat": 4}])
    monkeypatch.setattr(bench.executor, "oom_kill_counts", lambda: next(readings))
    result = invoke(
        "run", "--models", "test-self-kill", *TINY, "--executor", "process", "--out", tmp_path, "--run-id", "r"
    )
    latest = load_records(tmp_path / "r" / "records.jsonl")[-1]
    assert latest["status"] == "oom" and "oom_kill 3 -> 4" in latest["error"]
    assert "retrying 1 cell(s) recorded as not ok (1 killed)" in result.stderr


def test_oom_counters_are_read_where_the_kernel_keeps_them():
    counts = bench_executor().oom_kill_counts()
    assert all(isinstance(v, int) for v in counts.values())
    assert bench_executor().oom_evidence({"a": 1}, {"a": 1}) is None
    assert bench_executor().oom_evidence({"a": 1}, {"a": 2}) == "a oom_kill 1 -> 2"


def bench_executor():
    import bench.executor

    return bench.executor


def test_resume_retries_non_ok_cells_unless_kept(tmp_path):
    assert tiny_run(tmp_path, "--run-id", "r").exit_code == 0
    path = tmp_path / "r" / "records.jsonl"
    (record,) = load_records(path)
    path.write_text(json.dumps({**record, "status": "timeout", "error": "cell exceeded"}) + "\n")
    kept = tiny_run(tmp_path, "--run-id", "r", "--keep-failed")
    assert kept.exit_code == 0 and "ran 0 cell(s): nothing new" in kept.stdout
    dry = tiny_run(tmp_path, "--run-id", "r", "--dry-run")
    assert "retry (timeout)" in dry.stdout
    again = tiny_run(tmp_path, "--run-id", "r")
    assert again.exit_code == 0, again.output
    assert "retrying 1 cell(s) recorded as not ok (1 timeout)" in again.stderr
    assert [r["status"] for r in load_records(path)] == ["timeout", "ok"]


# --- 5. every value is checked before any compute -------------------------------------------------


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('epochs = "2"', "epochs expects an integer"),
        ("epochs = [1, 2]", "epochs takes one value"),
        ("batches = 1.7", "batches expects an integer"),
        ('timeout = "soon"', "timeout expects a number"),
        ('seed = "zero"', "seed expects an integer"),
        ('compile = "yes"', "compile expects true or false"),
        ("eta = nan", "eta must be a finite number"),
        ("lr = [0.001, nan]", "lr must be a finite number"),
        ("seed = -1", "seed must be at least 0"),
        ("seed = 9223372036854775807\nseeds = 2", "go beyond the largest seed"),
    ],
)
def test_bad_sweep_file_values(tmp_path, line, message):
    sweep = tmp_path / "sweep.toml"
    sweep.write_text(line + "\n")
    assert_refused(tiny_run(tmp_path, "--sweep", sweep), message)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--candidate-ratio", "nan"], "candidate-ratio must be a finite number"),
        (["--candidate-ratio", "inf"], "candidate-ratio must be a finite number"),
        (["--eta", "nan"], "eta must be a finite number"),
        (["--timeout", "nan"], "timeout must be a finite number"),
        (["--timeout", "inf"], "timeout must be a finite number"),
        (["--lr", "nan"], "lr must be a finite number"),
        (["--initial-noise", "nan"], "initial-noise must be a number or inf"),
        (["--d-model", "1000000000"], "d-model must be at most 65536"),
        (["--seed", str(2**64)], "seed must be at most"),
        (["--model-arg", "d_model=NaN"], "d_model must be a finite number"),
        (["--model-arg", "d_model=100000000"], "too large"),
        (["--batches", "100000000000"], "data alone needs about"),
        (["--threads", "100000"], "threads must be at most 4096"),
        (["--retries", "1000"], "retries must be at most 100"),
        (["--models", "transformer", "--d-model", "60000"], "parameters: training needs about"),
        (["--models", "transformer", "--model-arg", "nhead=7"], "rejects its options"),
    ],
)
def test_bad_numbers_on_the_command_line(tmp_path, args, message):
    args = list(args)
    if "--timeout" in args:
        args += ["--executor", "process"]
    assert_refused(tiny_run(tmp_path, *args), message)
    assert not any(tmp_path.iterdir()), "nothing is written for rejected input"


def test_a_sweep_path_that_is_a_directory(tmp_path):
    assert_refused(tiny_run(tmp_path, "--sweep", tmp_path), "is a directory")


# --- 6. any records file is read, whatever it holds ------------------------------------------------


@pytest.mark.parametrize(
    ("bad", "problem"),
    [
        (b"42", "not a record"),
        (b'{"status": "ok", "model": "mlp"}', "without a key"),
        (b'{"key": "k", "status": "ok", "model": "mlp", "config": {"workload": {}}, "metrics": null}', "metrics"),
        (b'{"key": "k", "status": "ok", "model": "mlp"}', "without its config"),
        (
            b'{"key": "k", "status": "ok", "model": "mlp", "config": {"workload": {}, "train": {}}}',
            "config lacks config.seed",
        ),
        (b"\xff\xfe not utf-8", "not UTF-8"),
        (b'{"key": "k", "sta', "incomplete"),
    ],
)
def test_bad_record_lines_are_skipped_with_file_and_line(template, tmp_path, bad, problem):
    run_dir = tmp_path / "r"
    path = write_records(run_dir, [record_of(seed=0)])
    with open(path, "ab") as handle:
        handle.write(bad + b"\n")
    append_record(path, record_of(seed=1))
    with pytest.warns(UserWarning, match=f"records.jsonl:2: skipping .*{problem}"):
        assert len(load_records(path)) == 2
    with pytest.warns(UserWarning):
        result = invoke("report", run_dir)
    assert result.exit_code == 0, result.output
    with pytest.warns(UserWarning):
        dry = invoke("run", "--models", "mlp", "--profile", "smoke", "--out", tmp_path, "--run-id", "r", "--dry-run")
    assert dry.exit_code == 0, dry.output


def test_records_file_that_cannot_be_read(tmp_path):
    (tmp_path / "r" / "records.jsonl").mkdir(parents=True)
    dry = invoke("run", "--models", "mlp", "--profile", "smoke", "--out", tmp_path, "--run-id", "r", "--dry-run")
    assert_refused(dry, "cannot read")
    (tmp_path / "a" / "records.jsonl").mkdir(parents=True)
    assert_refused(invoke("compare", tmp_path / "a", tmp_path / "a"), "has no records.jsonl")


# --- 7. compare fails when it compared nothing -----------------------------------------------------


def test_compare_of_disjoint_runs_fails(tmp_path):
    write_records(tmp_path / "a", [record_of(seed=0, slate_acc=0.5)])
    write_records(tmp_path / "b", [record_of(seed=1, slate_acc=0.5)])
    result = invoke("compare", tmp_path / "a", tmp_path / "b")
    assert result.exit_code == 1 and "nothing was compared" in result.stderr


def test_compare_of_records_without_metrics_fails(tmp_path):
    write_records(tmp_path / "a", [record_of(seed=0, bare=True)])  # no metrics, no measurements at all
    write_records(tmp_path / "b", [record_of(seed=0, bare=True)])
    result = invoke("compare", tmp_path / "a", tmp_path / "b")
    assert result.exit_code == 1 and "lack their metrics on one side or both" in result.stderr


def test_compare_fails_on_cells_missing_from_b_and_tells_cells_apart(template, tmp_path):
    write_records(tmp_path / "a", [record_of(seed=0, slate_acc=0.5), record_of(seed=1, slate_acc=0.5)])
    write_records(tmp_path / "b", [record_of(seed=0, slate_acc=0.5)])
    result = invoke("compare", tmp_path / "a", tmp_path / "b")
    assert result.exit_code == 1 and "1 cell(s) of" in result.stderr and "missing from" in result.stderr
    same = invoke("compare", tmp_path / "b", tmp_path / "b")
    assert same.exit_code == 0, same.output
    from bench.compare import describe

    one, other = record_of(seed=0), record_of(seed=0)
    other["key"] = "another"
    assert describe(one) != describe(other)


@pytest.mark.parametrize("threshold", ["nan", "inf", "-0.1"])
def test_compare_threshold_must_be_finite(tmp_path, threshold):
    write_records(tmp_path / "a", [record_of(seed=0, slate_acc=0.5)])
    assert_refused(invoke("compare", tmp_path / "a", tmp_path / "a", "--threshold", threshold), "threshold")


# --- 8. LETOR files -----------------------------------------------------------------------------


def letor_split(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n")
    return path


GOOD = ["2 qid:1 1:0.5 2:0.1", "0 qid:1 1:0.1 2:0.3", "1 qid:2 1:0.2 2:0.2"]


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ("1 qid:2 1:0.2 2000000000:1", "line 3: feature id 2,000,000,000 is beyond 1,000,000"),
        (f"1 qid:{2**64} 1:0.2", "line 3: qid"),
        ("1 qid:2 1:nan 2:0.2", "line 3: contains a non-finite value"),
        ("inf qid:2 1:0.1", "line 3: contains a non-finite value"),
    ],
)
def test_letor_bad_lines_name_file_and_line(tmp_path, bad, message):
    path = letor_split(tmp_path / "train.txt", [*GOOD[:2], bad])
    with pytest.raises(letor.LetorError, match=message) as caught:
        letor.read_file(path)
    assert str(path) in str(caught.value)


def test_letor_cache_is_keyed_on_content_and_reparsed_when_broken(tmp_path):
    path = letor_split(tmp_path / "train.txt", GOOD)
    first = letor.read_file(path)
    (cache,) = (tmp_path / letor.CACHE_DIR).glob("train.txt.*.npz")
    cache.write_bytes(cache.read_bytes()[:40])  # truncated, e.g. by a full disk
    messages = []
    again = letor.read_file(path, progress=messages.append)
    assert (again.labels == first.labels).all() and "unreadable cache" in messages[0]
    # Same size, same modification time, other content: parsed again, not served from the cache.
    stat = path.stat()
    path.write_text(path.read_text().replace("2 qid:1", "3 qid:1"))
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert letor.read_file(path).labels[0] == 3


def test_oracle_is_refused_on_letor_data(tmp_path):
    args = ("--data", "letor", "--data-path", tmp_path)
    assert_refused(invoke("run", "--models", "oracle,mlp", *TINY, *args, "--out", tmp_path), "true utilities")


# --- 9. signals and hangs -------------------------------------------------------------------------


def test_sigterm_is_handled_like_ctrl_c(template, tmp_path, monkeypatch):
    import bench.commands.run

    def first_cell_then_term(cells, run_dir, run_config, on_progress, on_done):
        append_record(run_dir / "records.jsonl", record_of(seed=0, slate_acc=0.5))
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(10)
        pytest.fail("SIGTERM did not stop the run")

    monkeypatch.setattr(bench.commands.run, "run_cells", first_cell_then_term)
    before = signal.getsignal(signal.SIGTERM)  # not always the default: Ray's driver installs its own
    result = tiny_run(tmp_path, "--run-id", "r")
    assert result.exit_code == 128 + signal.SIGTERM, result.output
    assert "terminated (SIGTERM): finished cells are recorded" in result.stderr
    assert (tmp_path / "r" / "report.md").is_file()
    assert signal.getsignal(signal.SIGTERM) == before, "the handler is put back"


def test_unreachable_ray_cluster_is_refused_quickly(tmp_path):
    """A closed port, through the CLI, within the promised bound (``CONNECT_TIMEOUT_S``, 15 s). Needs the ray
    extra (CI installs `.[test,ray]`); without it `--executor ray` is refused earlier, for the missing package, and
    this test is skipped. The bound for an address that never answers is held by the next test, without Ray."""
    pytest.importorskip("ray")
    import socket

    from bench.ray_executor import CONNECT_TIMEOUT_S

    with socket.socket() as s:  # a port that nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    started = time.monotonic()
    result = tiny_run(tmp_path, "--executor", "ray", "--ray-address", f"127.0.0.1:{port}")
    assert_refused(result, "cannot reach the Ray cluster")
    assert time.monotonic() - started < CONNECT_TIMEOUT_S
    assert not (tmp_path / "r").exists() and list(tmp_path.glob("*/records.jsonl")) == []


def test_a_ray_address_that_never_answers_is_given_up_after_15_s(monkeypatch):
    """The connection attempt is bounded by 15 s (the Guarantees table's promise): an address that swallows the
    connection is refused with a ConfigError naming the bound. The socket's answer is simulated (a timeout after
    the given seconds), so the test takes no time and needs no Ray."""
    import socket

    from bench.errors import ConfigError
    from bench.ray_executor import CONNECT_TIMEOUT_S, check_reachable

    asked = []

    def never_answers(address, timeout=None, *args, **kwargs):
        asked.append((address, timeout))
        raise TimeoutError("timed out")

    monkeypatch.setattr(socket, "create_connection", never_answers)
    refusal = r"cannot reach the Ray cluster at 10\.0\.0\.1:6379 within 15 s \(timed out\)"
    with pytest.raises(ConfigError, match=refusal):
        check_reachable("10.0.0.1:6379")
    assert CONNECT_TIMEOUT_S == 15 and asked == [(("10.0.0.1", 6379), 15)]


# --- 10. conflicting or ignored flags --------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--timeout", "5"], "--timeout needs the process or ray executor"),
        (["--candidates", "10", "--candidate-ratio", "3"], "not both"),
    ],
)
def test_conflicting_flags(tmp_path, args, message):
    assert_refused(tiny_run(tmp_path, *args), message)
    assert not any(tmp_path.iterdir())


def test_report_on_an_unwritable_directory(tmp_path, monkeypatch):
    import bench.report

    write_records(tmp_path / "r", [record_of(seed=0, slate_acc=0.5)])

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(bench.report, "write_report", full)
    assert_refused(invoke("report", tmp_path / "r"), "cannot write the report")


def test_a_file_system_without_locks_warns_and_runs(tmp_path, monkeypatch):
    import bench.records

    def no_locks(handle, operation):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(bench.records.fcntl, "flock", no_locks)
    with pytest.warns(UserWarning, match="does not support locks"), RunLock(tmp_path / "r"):
        pass


def test_a_broken_tuning_study_is_one_error_line(tmp_path):
    run_dir = tmp_path / "t"
    run_dir.mkdir()
    (run_dir / "study.db").write_bytes(b"SQLite format 3\x00" + b"\x00" * 20)  # truncated
    result = invoke("tune", "--models", "mlp", *TINY[:-2], "--trials", "1", "--out", tmp_path, "--run-id", "t")
    assert_refused(result, "is not a readable tuning study")


def test_a_run_whose_report_cannot_be_written_keeps_its_records(tmp_path, monkeypatch):
    import bench.report

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(bench.report, "write_report", full)
    result = tiny_run(tmp_path, "--run-id", "r")
    assert result.exit_code == 1, result.output
    assert "error: cannot write the report" in result.stderr and "No space left" in result.stderr
    assert [r["status"] for r in load_records(tmp_path / "r" / "records.jsonl")] == ["ok"]


@pytest.mark.parametrize("content", ["[1, 2]", '{"KEY": "fast"}', '{"KEY": -1}', "not json", '{"KEY": NaN}'])
def test_a_broken_peak_flops_cache_is_measured_again(tmp_path, monkeypatch, content):
    import torch

    from bench import flops

    monkeypatch.setenv(flops.CACHE_ENV, str(tmp_path))
    monkeypatch.setattr(flops, "_matmul_probe", lambda dtype: 1e9)
    key = f"cpu-x|threads={torch.get_num_threads()}|{torch.float32}"
    (tmp_path / "peak_flops.json").write_text(content.replace("KEY", key))
    assert flops.cpu_peak_flops("fp32", "cpu-x") == 1e9
    assert json.loads((tmp_path / "peak_flops.json").read_text())[key] == 1e9


def test_a_skipped_record_line_is_one_warning_line_on_the_console(template, tmp_path):
    path = write_records(tmp_path / "r", [record_of(seed=0, slate_acc=0.5)])
    with open(path, "ab") as handle:
        handle.write(b"42\n")
    done = subprocess.run(
        [sys.executable, "-m", "bench.cli", "report", str(tmp_path / "r")], capture_output=True, text=True, cwd=ROOT
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr.strip() == f"warning: {path}:2: skipping not a record (a JSON int)", done.stderr


# --- 11. a model's scores are read only when they keep the contract (issue 28, 1) -------------------


@pytest.mark.parametrize(
    ("model", "problem"),
    [
        ("test-nan-eval", "returned non-finite scores (NaN) at validation"),
        ("test-nan-serving", "returned non-finite scores (NaN) at serving (batch 1)"),
        ("test-extra-column", "returned scores of shape (32, 11) and dtype float32 at training"),
        ("test-int-scores", "and dtype int64 at training"),
    ],
)
def test_scores_that_break_the_contract_fail_the_cell_naming_the_model(tmp_path, faulty_plugin, model, problem):
    result = tiny_run(tmp_path, "--run-id", "r", models=model)
    assert result.exit_code == 1, result.output
    (record,) = load_records(tmp_path / "r" / "records.jsonl")
    assert record["status"] == "failed" and record["metrics"] == {}, record
    assert record["error"].startswith(f"model {model!r} ") and problem in record["error"], record["error"]
    assert f"failed: model {model!r}" in result.stderr


def test_a_non_finite_comparison_with_the_best_order_fails(monkeypatch):
    import torch

    from bench import cell
    from bench.config import WorkloadConfig
    from bench.data import generate
    from bench.scores import ScoresError

    workload = generate(WorkloadConfig(batch_size=8, batches=1, valid_slates=8, test_slates=8, world="diversity"), 0)
    test = workload.test

    def broken(*args):
        n = len(test)
        return {
            "slate_value": torch.zeros(n),
            "slate_regret": torch.full((n,), math.nan),
            "slate_headroom": torch.ones(n),
        }

    monkeypatch.setattr(cell, "value_metrics", broken)
    scores = torch.randn(test.inputs.mask.shape).masked_fill(~test.inputs.mask, -math.inf)
    with pytest.raises(ScoresError, match="non-finite slate_regret at the comparison with the best order"):
        cell.evaluate(scores, test, True, workload.world)


# --- 12. a baseline the run does not have (issue 28, 2) ---------------------------------------------


def test_report_baseline_must_be_a_model_of_the_run(template, tmp_path):
    write_records(tmp_path / "r", [record_of(seed=0, slate_acc=0.5)])
    assert_refused(invoke("report", tmp_path / "r", "--baseline", "transformer"), "'transformer' is not a model of")
    assert_refused(invoke("report", tmp_path / "r", "--baseline", "nosuch"), "baseline 'nosuch'")
    assert invoke("report", tmp_path / "r", "--baseline", "mlp").exit_code == 0


def test_a_sweep_group_without_the_baseline_is_said_once(template, tmp_path):
    other = record_of(seed=0)
    other["model"] = "transformer"
    other["config"]["workload"]["slate_length"] = 4
    other["key"] = "another-cell"
    write_records(tmp_path / "r", [record_of(seed=0), record_of(seed=1), other])
    result = invoke("report", tmp_path / "r")
    assert result.exit_code == 0, result.output
    (line,) = [line for line in result.stderr.splitlines() if "baseline" in line]
    assert line == "warning: the baseline mlp has no cell at workload.slate_length 4 (transformer ran there): no Δ"


# --- 13. cell processes die with the driver; the run exits after its summary (issue 28, 3-4) ---------


def _bench(*args: str, env: dict | None = None, **kwargs) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "bench", *args], cwd=ROOT, env={**os.environ, **(env or {})}, text=True, **kwargs
    )


def _plugin_env(module: str) -> dict:
    return {"PYTHONPATH": os.pathsep.join([str(ROOT / "tests"), str(ROOT)]), "RERANK_BENCH_PLUGINS": module}


def _children(pid: int) -> list[int]:
    """The processes whose parent is ``pid`` (from /proc)."""
    found = []
    for stat_file in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):
            fields = stat_file.read_text().rpartition(")")[2].split()
            if int(fields[1]) == pid:
                found.append(int(stat_file.parent.name))
    return found


def _alive(pid: int) -> bool:
    """Running, or stopped: not gone and not a zombie waiting to be reaped."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the parent-death signal is Linux's")
def test_the_fork_server_and_its_cell_die_with_the_driver_at_once(tmp_path):
    args = ("run", "--models", "test-hangs", *TINY[:-2], "--out", str(tmp_path), "--run-id", "r")
    driver = _bench(*args, env=_plugin_env("faulty_models"), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    server = cell = None
    try:
        deadline = time.monotonic() + 120
        while cell is None and time.monotonic() < deadline:
            time.sleep(0.2)
            for pid in _children(driver.pid):
                if b"forkserver" in Path(f"/proc/{pid}/cmdline").read_bytes() and _children(pid):
                    server, cell = pid, _children(pid)[0]
        assert cell is not None, "the cell's process never started"
        os.kill(server, signal.SIGSTOP)  # a server that is not scheduled (a loaded machine) notices nothing itself
        driver.kill()
        driver.wait()
        deadline = time.monotonic() + 5
        while (_alive(server) or _alive(cell)) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not _alive(server) and not _alive(cell), "still running 5 s after kill -9 of the driver"
    finally:
        driver.kill()
        driver.wait()
        for pid in (server, cell):
            if pid is not None:
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)


def test_a_finished_run_exits_right_after_its_summary(tmp_path):
    """Teardown that waits (here an atexit handler of 60 s, standing in for slow library teardown on a loaded
    machine) does not keep a finished run alive: the summary is its last act."""
    args = ("run", "--models", "mlp", *TINY, "--out", str(tmp_path), "--run-id", "r")
    driver = _bench(*args, env=_plugin_env("slow_exit_models"), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        for line in driver.stdout:
            if line.startswith("report:"):
                break
        summary_at = time.monotonic()
        assert driver.wait(timeout=30) == 0
        assert time.monotonic() - summary_at < 30
    finally:
        driver.kill()
        driver.wait()


# --- 14. run ids: a portable set, and the problem named (issue 28, 5) --------------------------------


@pytest.mark.parametrize(
    ("run_id", "problem"),
    [
        ("x" * 300, "it is 300 characters long, more than 100"),
        ("a\nb", "'\\n' (U+000A)"),
        ("abc\u202etxt.exe", "(U+202E)"),
        ("my run", "' ' (U+0020)"),
        ("../escape", "'/' (U+002F)"),
        ("/tmp/abs", "'/' (U+002F)"),
        ("..", "it starts with '.'"),
        (".hidden", "it starts with '.'"),
    ],
)
def test_run_ids_are_portable_names_and_the_problem_is_said(tmp_path, run_id, problem):
    result = tiny_run(tmp_path, "--run-id", run_id, "--dry-run")
    assert_refused(result, problem)
    assert "is not a portable directory name: " in result.stderr
    assert not any(tmp_path.iterdir())


def test_a_portable_run_id_is_taken(tmp_path):
    result = tiny_run(tmp_path, "--run-id", "Run-2_b.1", "--dry-run")
    assert result.exit_code == 0, result.output


# --- 15. a record without what a reader needs (issue 32, 1) ---------------------------------------


def test_an_ok_record_without_metrics_is_skipped_with_file_and_line(template, tmp_path):
    stripped = record_of(seed=1)
    del stripped["metrics"]
    path = write_records(tmp_path / "r", [record_of(seed=0), stripped])
    with pytest.warns(UserWarning, match=f"{path}:2: skipping an ok record without its metrics"):
        records = load_records(path)
    assert [r["config"]["seed"] for r in records] == [0]
    with pytest.warns(UserWarning, match=f"{path}:2: skipping an ok record without its metrics"):
        result = invoke("report", tmp_path / "r")
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize("side", ["a", "b"])
def test_compare_fails_when_a_cells_metrics_are_missing_on_either_side(template, tmp_path, side):
    stripped = record_of(seed=0)
    stripped["metrics"] = {}
    for run in "ab":
        write_records(tmp_path / run, [stripped if run == side else record_of(seed=0), record_of(seed=1)])
    result = invoke("compare", tmp_path / "a", tmp_path / "b")
    assert result.exit_code == 1, result.output
    assert f"no metrics in {tmp_path / side}" in result.stdout
    assert "1 cell(s) ok in both runs lack their metrics" in result.stderr
    assert "compared 0 value(s) of 1 cell(s)" not in result.stdout and "of 1 cell(s) ok in both" in result.stdout


def test_compare_counts_the_values_it_compared(template, tmp_path):
    write_records(tmp_path / "a", [record_of(seed=0)])
    result = invoke("compare", tmp_path / "a", tmp_path / "a", "--all")
    assert result.exit_code == 0, result.output
    rows = [line for line in result.stdout.splitlines() if line.startswith("mlp s0 ")]  # one row per value
    assert f"compared {len(rows)} value(s) of 1 cell(s)" in result.stdout and rows


# --- 16. LETOR data that cannot rank (issue 32, 2 and 4) -------------------------------------------


def letor_data(tmp_path: Path, test: list[str], train: list[str] | None = None) -> Path:
    data = tmp_path / "data"
    data.mkdir()
    letor_split(data / "train.txt", train or letor_lines(40, 1))
    letor_split(data / "vali.txt", letor_lines(10, 100))
    letor_split(data / "test.txt", test)
    return data


def letor_run(tmp_path: Path, data: Path):
    return invoke(
        "run",
        "--models",
        "mlp",
        *TINY,
        "--data",
        "letor",
        "--data-path",
        data,
        "--out",
        tmp_path / "o",
        "--run-id",
        "r",
    )


def test_letor_queries_that_cannot_rank_are_left_out_with_a_count(tmp_path):
    single = [f"1 qid:{300 + q} 1:0.5 2:0.1 3:1" for q in range(3)]
    unjudged = letor_lines(2, 400, relevant=False)
    data = letor_data(tmp_path, letor_lines(10, 200) + single + unjudged)
    result = letor_run(tmp_path, data)
    assert result.exit_code == 0, result.output
    said = " ".join(result.stderr.split())  # the console wraps long lines
    assert "test: 5 of 15 queries left out of evaluation (3 with one document, 2 without a relevant document)" in said
    (record,) = load_records(tmp_path / "o" / "r" / "records.jsonl")
    assert record["metrics"]["test_slates"] == 10 and record["metrics"]["judged_slates"] == 10
    assert record["data"]["queries_left_out"] == {"valid": 0, "test": 5}


@pytest.mark.parametrize(
    ("test", "train", "message"),
    [
        (
            [f"1 qid:{q} 1:0.5 2:0.1 3:1" for q in range(10)],
            None,
            "test.txt: no query has two documents and a relevant",
        ),
        (
            letor_lines(10, 200, relevant=False),
            None,
            "nothing to judge (of 10 queries: 0 with one document, 10 without",
        ),
        (letor_lines(10, 200), letor_lines(40, 1, relevant=False), "train.txt: no query has two documents"),
    ],
)
def test_a_letor_split_with_nothing_to_learn_or_judge_is_refused(tmp_path, test, train, message):
    assert_refused(letor_run(tmp_path, letor_data(tmp_path, test, train)), message)
    assert not (tmp_path / "o" / "r" / "records.jsonl").exists()


def test_a_negative_letor_label_is_refused_naming_the_line(tmp_path):
    train = letor_lines(40, 1)
    train[4] = "-1" + train[4][1:]
    data = letor_data(tmp_path, letor_lines(10, 200), train)
    assert_refused(letor_run(tmp_path, data), f"{data / 'train.txt'}, line 5: the label -1 is negative")


# --- 17. a records file that is not the run's own regular file (issue 32, 3) -------------------------


def test_a_records_file_that_is_a_symlink_is_refused(template, tmp_path):
    other = write_records(tmp_path / "other", [record_of(seed=0)])
    before = other.read_bytes()
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "records.jsonl").symlink_to(other)
    for extra in ([], ["--dry-run"]):
        assert_refused(tiny_run(tmp_path, "--run-id", "x", *extra), "records.jsonl is a symbolic link")
    assert_refused(invoke("report", tmp_path / "x"), "is a symbolic link")
    assert other.read_bytes() == before


def test_a_records_file_that_is_a_fifo_is_refused_at_once(tmp_path):
    (tmp_path / "x").mkdir()
    os.mkfifo(tmp_path / "x" / "records.jsonl")
    args = ("run", "--models", "mlp", *TINY, "--out", str(tmp_path), "--run-id", "x", "--dry-run")
    done = subprocess.run([sys.executable, "-m", "bench", *args], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith("error: ") and "is a FIFO" in done.stderr


# --- 18. digits other than 0-9 in model options (issue 32, 4) ---------------------------------------


@pytest.mark.parametrize("value", ["\uff16\uff14", "\u0663\u0662"])
def test_model_options_with_digits_other_than_ascii_are_refused(tmp_path, value):
    result = tiny_run(tmp_path, "--model-arg", f"d_model={value}", "--dry-run", models="transformer")
    assert_refused(result, f"model option d_model={value!r} has digits other than 0-9")
    assert f"write d_model={int(value)}" in result.stderr


# --- 19. planning grows with the cells, not faster (issue 32, 5) -------------------------------------


def test_planning_validates_and_builds_once_per_point_of_the_other_axes(monkeypatch):
    """A sweep's seeds share everything but the seed: the cell of each point of the other axes is validated and
    its model built once, however many seeds it has (each seed cost two model constructions before)."""
    from bench import config, models, sweep

    built, validated = [], []
    construct, validate = models.construct, sweep.validate
    monkeypatch.setattr(models, "construct", lambda cell, *a, **k: built.append(cell.model) or construct(cell, *a, **k))
    monkeypatch.setattr(sweep, "validate", lambda cell: validated.append(cell.seed) or validate(cell))
    run, cells = sweep.plan({"models": "mlp,transformer", "seeds": 500, "profile": "smoke", "slate_length": "5,6"})
    assert len(cells) == 2000 and len({c.key() for c in cells}) == 2000
    assert sorted({c.seed for c in cells}) == list(range(500))
    assert len(validated) == 4, "one validation per model and slate length"
    assert len(built) == 4, "one meta and one real construction per model (the slate length changes no option)"
    assert config.CellConfig.from_dict(cells[-1].to_dict()) == cells[-1]
    assert [c.key() for c in cells] == [c._config_hash() for c in cells], "the keys of with_seeds are the plain ones"
    from dataclasses import asdict

    assert all(c.to_dict() == asdict(c) for c in cells[::97])
