"""The hardening battery (issue 13): bad input, bad files, faults and signals, one class after another.

Every case is smoke-sized: cells that must run use the inline executor and a few tiny batches; the rest are
refused before any compute, which is what they check.
"""

from __future__ import annotations

import errno
import io
import json
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


def test_a_letor_test_split_without_relevant_documents_finishes(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "train.txt").write_text("\n".join(letor_lines(40, 1)) + "\n")
    (data / "vali.txt").write_text("\n".join(letor_lines(10, 100)) + "\n")
    (data / "test.txt").write_text("\n".join(letor_lines(10, 200, relevant=False)) + "\n")
    result = invoke(
        "run", "--models", "mlp", *TINY, "--data", "letor", "--data-path", data, "--out", tmp_path, "--run-id", "r"
    )
    assert result.exit_code == 0, result.output
    (record,) = load_records(tmp_path / "r" / "records.jsonl")
    assert record["status"] == "ok" and record["metrics"]["judged_slates"] == 0
    assert record["metrics"]["slate_acc"] is None and "slate_acc n/a" in result.stderr
    assert (tmp_path / "r" / "report.md").is_file()


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
    assert_refused(tiny_run(out, *extra), "cannot write the run's records")


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
    assert result.exit_code == 1 and "nothing was compared" in result.stderr


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
        (["--run-id", "../escape"], "--run-id must be a plain directory name"),
        (["--run-id", "/tmp/abs"], "--run-id must be a plain directory name"),
        (["--run-id", ".."], "--run-id must be a plain directory name"),
    ],
)
def test_conflicting_flags(tmp_path, args, message):
    assert_refused(tiny_run(tmp_path, *args), message)
    assert not any(tmp_path.iterdir())


def test_report_baseline_must_exist(template, tmp_path):
    write_records(tmp_path / "r", [record_of(seed=0, slate_acc=0.5)])
    assert_refused(invoke("report", tmp_path / "r", "--baseline", "nosuch"), "baseline 'nosuch'")
    assert invoke("report", tmp_path / "r", "--baseline", "transformer").exit_code == 0


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
