"""bench/records.py on its own, unit-sized: what a record keeps, how it is packed, written, read back and locked.
The fault cases through the CLI are in test_hostile_input.py."""

from __future__ import annotations

import base64
import errno
import fcntl
import json
import math
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from bench import records
from bench.catalog import lookup
from bench.config import CellConfig, ConfigError, WorkloadConfig
from bench.records import (
    RECORDS_FILE,
    STATUSES,
    RecordWriteError,
    RunLock,
    append_record,
    check_writable,
    is_allocation_failure,
    json_safe,
    latest_records,
    load_records,
    metric_slates,
    new_record,
    pack_bits,
    pack_per_slate,
    pack_values,
    paired_slate_values,
    slate_hits,
    slate_interval,
    slate_values,
    unpack_bits,
    unpack_values,
)
from bench.stats import paired_values, slate_estimate

CELL = CellConfig(model="mlp", workload=WorkloadConfig(batches=1))


def record(seed: int = 0, status: str = "ok", **fields) -> dict:
    made = new_record(CellConfig(model="mlp", seed=seed, workload=WorkloadConfig(batches=1)), status)
    if status == "ok":  # an ok record says what it measured: one without slate_acc is skipped by readers
        made["metrics"]["slate_acc"] = 0.5
    made.update(fields)
    return json.loads(json.dumps(made))


@pytest.mark.parametrize(
    "text",
    ["CUDA out of memory", "DefaultCPUAllocator: can't allocate memory", "Cannot allocate memory", "MemoryError"],
)
def test_each_allocation_failure_message_is_evidence_of_oom(text):
    assert is_allocation_failure(text) and is_allocation_failure(text.upper())


def test_other_errors_are_no_evidence_of_oom():
    assert not is_allocation_failure("RuntimeError: shapes do not match") and not is_allocation_failure("")


def test_per_slate_hits_round_trip_as_packed_bits():
    hits = torch.tensor([True, False, True, True, False, False, True, False, True, True, False])
    assert unpack_bits(pack_bits(hits), 11).tolist() == hits.tolist()
    kept = record(metrics={"judged_slates": 11, "test_slates": 20}, per_slate={"slate_hits": pack_bits(hits)})
    assert slate_hits(kept).tolist() == hits.tolist(), "the hits are those of the judged slates"
    older = record(metrics={"test_slates": 11}, per_slate={"slate_hits": pack_bits(hits)})
    assert slate_hits(older).tolist() == hits.tolist(), "records without judged_slates count the test slates"
    assert slate_hits(record(metrics={"judged_slates": 11})) is None
    assert slate_hits(record(metrics={}, per_slate={"slate_hits": pack_bits(hits)})) is None


def test_values_are_half_precision_where_they_fit_and_single_beyond():
    small = torch.tensor([0.5, -1.25, 65504.0])
    assert len(base64.b64decode(pack_values(small))) == 6, "half precision: 2 bytes a value"
    assert unpack_values(pack_values(small), 3).tolist() == [0.5, -1.25, 65504.0]
    large = torch.tensor([70000.0, 1.0, float("nan")])
    unpacked = unpack_values(pack_values(large), 3)
    assert unpacked[:2].tolist() == [70000.0, 1.0] and math.isnan(unpacked[2])
    assert len(base64.b64decode(pack_values(large))) == 12, "single precision: 4 bytes a value"
    with pytest.raises(ValueError, match="6 bytes are not 4 half- or single-precision values"):
        unpack_values(pack_values(small), 4)
    packed = pack_per_slate({"slate_hits": torch.tensor([True, False]), "slate_value": torch.tensor([1.5, 2.5])})
    assert packed == {
        "slate_hits": pack_bits(torch.tensor([True, False])),
        "slate_value": pack_values(torch.tensor([1.5, 2.5])),
    }


def value_record(values, regrets=None, best=None, data_key=None, count=None) -> dict:
    per_slate = {"slate_value": pack_values(torch.tensor(values))}
    if regrets is not None:
        per_slate["slate_regret"] = pack_values(torch.tensor(regrets))
    if best is not None:
        per_slate["slate_headroom"] = pack_values(torch.tensor(best))
    made = record(metrics={"test_slates": count or len(values)}, per_slate=per_slate)
    if data_key is not None:
        made["data_key"] = data_key
    return made


def test_a_metric_reads_the_per_slate_values_it_is_made_of():
    values, regrets, best = [1.0, 2.0, 4.0, 3.0], [0.5, 0.0, 1.0, 0.25], [2.0, 2.0, 5.0, 4.0]
    kept = value_record(values, regrets, best)
    assert slate_values(kept, "slate_value").tolist() == values and slate_values(kept, "missing") is None
    numerator, denominator = metric_slates(kept, lookup("slate_value"))
    assert numerator.tolist() == values and denominator is None
    share = lookup("slate_regret_share")
    assert share.per_slate[1] is not None
    numerator, denominator = metric_slates(kept, share)
    assert numerator.tolist() == slate_values(kept, share.per_slate[0]).tolist()
    assert denominator.tolist() == slate_values(kept, share.per_slate[1]).tolist()
    assert metric_slates(value_record(values, regrets), share) is None, "a ratio needs its denominator"
    assert metric_slates(kept, lookup("slate_acc")) is None
    assert slate_interval(kept, lookup("slate_value")) == pytest.approx(slate_estimate(np.array(values))[1])
    assert slate_interval(record(), lookup("slate_value")) is None


def test_a_paired_test_needs_the_same_data_and_slate_count():
    a, b = value_record([1.0, 2.0, 4.0, 3.0]), value_record([1.5, 2.0, 3.0, 2.0])
    expected = paired_values(np.array([1.0, 2.0, 4.0, 3.0]), np.array([1.5, 2.0, 3.0, 2.0]))
    assert paired_slate_values(a, b, lookup("slate_value")) == pytest.approx(expected)
    assert paired_slate_values(a, value_record([1.5, 2.0, 3.0, 2.0], data_key="other"), lookup("slate_value")) is None
    assert paired_slate_values(a, value_record([1.5, 2.0, 3.0]), lookup("slate_value")) is None
    assert paired_slate_values(a, record(), lookup("slate_value")) is None


def test_the_git_revision_is_the_checkouts_head_or_none(monkeypatch):
    head = subprocess.run(
        ["git", "rev-parse", "--short=12", "HEAD"], cwd=Path(records.__file__).parent, capture_output=True, text=True
    )
    assert records.git_revision() == (head.stdout.strip() or None if head.returncode == 0 else None)

    def missing(*args, **kwargs):
        raise FileNotFoundError("git")

    monkeypatch.setattr(records.subprocess, "run", missing)
    assert records.git_revision() is None
    failed = subprocess.CompletedProcess([], 128, stdout="fatal\n", stderr="")
    monkeypatch.setattr(records.subprocess, "run", lambda *a, **k: failed)
    assert records.git_revision() is None


def test_the_cpu_name_comes_from_cpuinfo_else_the_platform(monkeypatch, tmp_path):
    info = "processor\t: 0\nvendor_id\t: X\nmodel name\t: Test CPU: rev 2 @ 1.00GHz \nflags\t: a b\n"
    real_path = records.Path
    monkeypatch.setattr(records, "Path", lambda p: tmp_path / "cpuinfo" if p == "/proc/cpuinfo" else real_path(p))
    (tmp_path / "cpuinfo").write_text(info)
    assert records.cpu_name() == "Test CPU: rev 2 @ 1.00GHz"
    (tmp_path / "cpuinfo").unlink()
    monkeypatch.setattr(records.platform, "processor", lambda: "")
    monkeypatch.setattr(records.platform, "machine", lambda: "test-machine")
    assert records.cpu_name() == "test-machine"


def test_the_environment_says_what_the_cell_ran_on():
    env = records.environment(torch.device("cpu"))
    assert env["device"] == "cpu" and env["device_name"] == records.cpu_name() and env["cpu"] == records.cpu_name()
    assert env["threads"] == torch.get_num_threads() and env["torch"] == torch.__version__
    assert env["precision"] == "fp32" and env["amp"] is None and env["compile"] is False
    assert env["git_revision"] == records.git_revision()
    assert env["python"] == records.platform.python_version() and env["platform"] == records.platform.platform()
    assert env["cpu_count"] == records.os.cpu_count() and env["cuda"] == torch.version.cuda
    bf16 = records.environment(torch.device("cpu"), "bf16", compiled=True)
    assert bf16["precision"] == "bf16" and bf16["amp"] == "bf16" and bf16["compile"] is True


def test_a_record_is_one_sorted_strict_json_line(tmp_path):
    path = tmp_path / "run" / RECORDS_FILE
    append_record(path, {"b": 1, "a": [1.5]})
    append_record(path, {"c": None})
    assert path.read_text() == '{"a": [1.5], "b": 1}\n{"c": null}\n'
    with pytest.raises(ValueError):
        append_record(path, {"x": float("nan")})
    assert path.read_text().count("\n") == 2


def test_a_torn_last_line_is_ended_so_the_next_record_stays_whole(tmp_path):
    path = tmp_path / RECORDS_FILE
    path.write_bytes(b'{"torn": ')
    append_record(path, {"a": 1})
    assert path.read_bytes() == b'{"torn": \n{"a": 1}\n'


def test_a_failed_write_cuts_the_file_back_and_an_unopenable_one_is_named(tmp_path, monkeypatch):
    path = tmp_path / RECORDS_FILE
    append_record(path, {"a": 1})
    before = path.read_bytes()

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(records.os, "fsync", full)
    with pytest.raises(RecordWriteError, match=f"cannot append to {path}: No space left on device") as caught:
        append_record(path, {"b": 2})
    assert caught.value.errno == errno.ENOSPC and path.read_bytes() == before
    monkeypatch.undo()
    (tmp_path / "dir.jsonl").mkdir()
    with pytest.raises(RecordWriteError, match="cannot open .*dir.jsonl: Is a directory") as caught:
        append_record(tmp_path / "dir.jsonl", {"a": 1})
    assert caught.value.errno == errno.EISDIR


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        (lambda r: r.update(key=""), "a record without a key"),
        (lambda r: r.update(status=None), "a record without a status"),
        (lambda r: r.update(model=3), "a record without a model name"),
        (lambda r: r.update(metrics=[]), "metrics is not an object"),
        (lambda r: r.update(measurements=1), "measurements is not an object"),
        (lambda r: r.update(config={"workload": {}}), "a record without its config"),
        (lambda r: r["config"].pop("seed"), "a record whose config lacks config.seed"),
        (lambda r: r["config"]["workload"].pop("item_dim"), "a record whose config lacks config.workload.item_dim"),
        (lambda r: r["config"]["train"].pop("loss"), "a record whose config lacks config.train.loss"),
    ],
)
def test_a_line_that_is_not_a_usable_record_is_skipped_naming_why(tmp_path, change, problem):
    path = tmp_path / RECORDS_FILE
    bad = record(seed=1)
    change(bad)
    path.write_text(json.dumps(record(seed=0)) + "\n" + json.dumps(bad) + "\n\n" + json.dumps(record(seed=2)) + "\n")
    with pytest.warns(UserWarning, match=f"{RECORDS_FILE}:2: skipping {problem}"):
        kept = load_records(path)
    assert [r["config"]["seed"] for r in kept] == [0, 2]


def test_torn_non_json_and_non_utf8_lines_are_skipped(tmp_path):
    path = tmp_path / RECORDS_FILE
    path.write_bytes(b'[1]\n{"torn": \n\xff\xfe\n' + json.dumps(record()).encode() + b"\n")
    with pytest.warns(UserWarning) as caught:
        kept = load_records(path)
    assert len(kept) == 1
    messages = [str(w.message) for w in caught]
    assert messages == [
        f"{path}:1: skipping not a record (a JSON list)",
        f"{path}:2: skipping an incomplete record line",
        f"{path}:3: skipping not UTF-8 text",
    ]
    assert load_records(path, problem=lambda value: None if isinstance(value, list) else "not a list") == [[1]]
    with pytest.raises(ConfigError, match="cannot read"):
        load_records(tmp_path)


def test_the_latest_record_of_each_cell_wins(tmp_path):
    assert latest_records(tmp_path) == []
    first, other, second = record(seed=0), record(seed=1), record(seed=0, status="failed")
    for made in (first, other, second):
        append_record(tmp_path / RECORDS_FILE, made)
    assert [(r["config"]["seed"], r["status"]) for r in latest_records(tmp_path)] == [(0, "failed"), (1, "ok")]


def test_a_new_record_has_every_field_and_only_known_statuses():
    made = new_record(CELL, "failed", "boom")
    assert made["key"] == CELL.key() and made["data_key"] == CELL.data_key() and made["model"] == "mlp"
    assert made["status"] == "failed" and made["error"] == "boom" and made["config"] == CELL.to_dict()
    assert made["schema"] == records.SCHEMA_VERSION and made["finished_at"] is None and made["started_at"]
    for section in ("metrics", "measurements", "per_slate", "timings", "conditions", "environment"):
        assert made[section] == {}
    assert new_record(CELL)["status"] == "ok" and new_record(CELL)["error"] is None
    with pytest.raises(ValueError, match="unknown record status 'lost'"):
        new_record(CELL, "lost")
    assert set(STATUSES) >= {"ok", "failed", "oom", "killed"}


def test_json_safe_turns_every_non_finite_float_into_none():
    value = {"a": float("nan"), "b": [1.0, float("inf"), (float("-inf"), 2)], "c": {"d": 3.5, "e": "x"}}
    assert json_safe(value) == {"a": None, "b": [1.0, None, [None, 2]], "c": {"d": 3.5, "e": "x"}}


def test_a_writable_run_directory_is_made_and_left_clean(tmp_path):
    run_dir = tmp_path / "out" / "r"
    check_writable(run_dir)
    assert sorted(p.name for p in run_dir.iterdir()) == [RECORDS_FILE]
    assert (run_dir / RECORDS_FILE).read_bytes() == b""
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError) as refused:
        check_writable(tmp_path / "file" / "r")
    where = tmp_path / "file" / "r"
    assert str(refused.value) == f"cannot write the run's records in {where}: {where}: Not a directory"


def test_a_run_lock_is_reentrant_and_refuses_another_holder(tmp_path):
    with RunLock(tmp_path), RunLock(tmp_path):
        assert (tmp_path / ".lock").read_text() == f"{records.os.getpid()}\n"
    assert records._held_locks == {}
    with open(tmp_path / ".lock", "a+") as other:  # another open file: its flock conflicts as another process's
        fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
        other.seek(0)
        other.truncate()
        other.write("4242\n")
        other.flush()
        refusal = r"in use by another bench process \(pid 4242\); wait for it to finish or choose another --run-id$"
        with pytest.raises(ConfigError, match=refusal):
            RunLock(tmp_path).__enter__()
    assert records._held_locks == {}
    with RunLock(tmp_path):
        pass


def test_a_file_system_without_locks_warns_and_runs(tmp_path, monkeypatch):
    def no_locks(handle, flags):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(records.fcntl, "flock", no_locks)
    warning = "does not support locks \\(No locks available\\); make sure no other run uses this directory"
    with pytest.warns(UserWarning, match=warning), RunLock(tmp_path):
        assert records._held_locks
    assert records._held_locks == {}

    def broken(handle, flags):
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(records.fcntl, "flock", broken)
    with pytest.raises(ConfigError, match="cannot lock the run directory .*: Input/output error$"):
        RunLock(tmp_path).__enter__()
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match="cannot lock the run directory"):
        RunLock(tmp_path / "file").__enter__()


def test_a_paired_ratio_is_tested_over_its_denominator():
    share = lookup("slate_regret_share")
    a = value_record([1.0, 2.0, 4.0, 3.0], [0.5, 0.0, 1.0, 0.25], [2.0, 2.0, 5.0, 4.0])
    b = value_record([1.0, 2.0, 4.0, 3.0], [0.25, 0.5, 0.5, 0.0], [2.0, 2.0, 5.0, 4.0])
    diff, below = np.array([0.25, -0.5, 0.5, 0.25]), np.array([2.0, 2.0, 5.0, 4.0])
    assert paired_slate_values(a, b, share) == pytest.approx(paired_values(diff, np.zeros(4), below))
    assert paired_slate_values(a, b, share)[0] == pytest.approx(0.5 / 13.0)


def test_a_run_directory_is_made_with_its_parents_and_may_exist_already(tmp_path):
    check_writable(tmp_path / "new" / "r")
    check_writable(tmp_path / "new" / "r")
    with RunLock(tmp_path / "other" / "r"):
        assert (tmp_path / "other" / "r" / ".lock").is_file()
    with RunLock(tmp_path / "other" / "r"):
        pass


def test_a_holder_that_wrote_no_pid_is_named_unknown(tmp_path):
    with open(tmp_path / ".lock", "a+") as other:
        fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(ConfigError, match=r"\(pid unknown\)"):
            RunLock(tmp_path).__enter__()
