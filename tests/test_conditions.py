"""Conditions of a measurement: contention from CPU counters, oversubscription, dropout of old records."""

import subprocess
import sys
import textwrap

import pytest

from bench.cell import run_cell
from bench.conditions import (
    CONTENDED_THRESHOLD,
    CpuCounters,
    contention,
    oversubscription,
    read_counters,
    recorded_cpu_dropout,
    usable_cores,
)
from bench.records import RECORDS_FILE, append_record
from bench.report import write_report
from bench.tables import CONTENDED_MARK


def counters(wall, busy, own, steal=0.0, cores=2, load=0.5):
    return CpuCounters(wall_s=wall, busy_s=busy, steal_s=steal, own_s=own, cores=cores, load_1min=load)


def test_a_quiet_machine_is_not_contended():
    # 10 s, a 2-thread cell busy 19.6 cpu-s, the machine busy 19.8: others took 0.2 cpu-s
    result = contention(counters(0, 1000, 50), counters(10, 1019.8, 69.6), cell_threads=2)
    assert result["other_cpu_seconds"] == pytest.approx(0.2)
    assert result["other_cpu_fraction"] == pytest.approx(0.01)
    assert result["contention"] == pytest.approx(0.01) and result["contended"] is False


def test_a_second_busy_process_makes_the_cell_contended():
    # the cell's 2 threads got half the machine; the other half went to someone else
    result = contention(counters(0, 1000, 50), counters(10, 1020, 60), cell_threads=2)
    assert result["other_cpu_seconds"] == pytest.approx(10)
    assert result["contention"] == pytest.approx(0.5) and result["contended"] is True


def test_other_work_on_the_cores_a_cell_leaves_free_is_not_contention():
    # a 1-thread cell on 4 cores while another process keeps 2 cores busy
    result = contention(counters(0, 0, 0, cores=4), counters(10, 30, 10, cores=4), cell_threads=1)
    assert result["other_cpu_fraction"] == pytest.approx(0.5)
    assert result["contention"] == 0 and result["contended"] is False


def test_steal_time_counts_as_taken_capacity():
    result = contention(counters(0, 1000, 50, steal=3), counters(10, 1020, 65, steal=8), cell_threads=2)
    assert result["steal_seconds"] == pytest.approx(5)
    assert result["other_cpu_seconds"] == pytest.approx(5)
    assert result["contended"] is (0.25 > CONTENDED_THRESHOLD)


def test_without_machine_counters_nothing_is_claimed():
    blind = CpuCounters(0, None, None, 1, 2, None)
    result = contention(blind, CpuCounters(5, None, None, 4, 2, None), cell_threads=1)
    assert result["contended"] is None and result["other_cpu_seconds"] is None
    assert result["cell_cpu_seconds"] == 3


def test_counters_read_this_machine():
    reading = read_counters()
    assert reading.cores >= 1 and reading.own_s > 0
    if reading.busy_s is not None:
        assert reading.busy_s > 0


SPINNER = textwrap.dedent(
    """
    import hashlib, sys, threading
    data = b"x" * (1 << 20)
    def spin():
        while True:
            hashlib.sha256(data).digest()  # releases the GIL: both threads use a core
    for _ in range(2):
        threading.Thread(target=spin, daemon=True).start()
    print("spinning", flush=True)
    sys.stdin.read()  # until the test closes stdin
    """
)


def test_a_cell_next_to_a_busy_2_thread_process_is_flagged_in_its_record_and_the_report(smoke_cell, tmp_path):
    if read_counters().busy_s is None:
        pytest.skip("no /proc/stat: contention is not measured on this system")
    spinner = subprocess.Popen([sys.executable, "-c", SPINNER], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        assert spinner.stdout.readline().strip() == b"spinning"
        # The cell uses every core, so any busy neighbour takes from it.
        record = run_cell(smoke_cell("mlp", model_kwargs={"d_model": 8}, threads=usable_cores()))
    finally:
        spinner.stdin.close()
        spinner.kill()
        spinner.wait()
    assert record["status"] == "ok", record["error"]
    conditions = record["conditions"]
    assert conditions["contended"] is True, conditions
    assert conditions["other_cpu_seconds"] > 0.3 * conditions["wall_seconds"]
    assert conditions["cell_threads"] == usable_cores()
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    append_record(run_dir / RECORDS_FILE, record)
    report = write_report(run_dir).read_text()
    assert "**1 of 1 cells ran contended**" in report
    headline = next(line for line in report.splitlines() if line.startswith("| mlp"))
    assert CONTENDED_MARK in headline


def test_oversubscription_counts_threads_of_concurrent_cells_against_cores():
    assert oversubscription(1, 1, cores=2) is None
    assert oversubscription(2, 1, cores=2) is None
    message = oversubscription(2, 2, cores=2)
    assert "4 compute threads on 2 core(s)" in message and "--threads 1" in message
    assert oversubscription(4, 1, cores=2) is not None


def test_torch_default_threads_come_from_omp_num_threads(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert "3 torch thread(s)" in oversubscription(0, 1, cores=2)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert oversubscription(0, 2, cores=2) is None


def test_old_records_are_read_with_the_dropout_their_model_chose():
    amd = {"cpu": "AMD EPYC", "device": "cpu"}
    assert recorded_cpu_dropout({"model": "transformer", "environment": amd}) == "bulk"
    assert recorded_cpu_dropout({"model": "setrank", "environment": amd}) == "bulk"
    assert recorded_cpu_dropout({"model": "mlp", "environment": amd}) == "torch"
    intel = {"cpu": "Intel(R) Xeon(R)", "device": "cpu"}
    assert recorded_cpu_dropout({"model": "transformer", "environment": intel}) == "torch"
    gpu = {"cpu": "AMD EPYC", "device": "cuda"}
    assert recorded_cpu_dropout({"model": "prm", "environment": gpu}) == "torch"
    new = {**amd, "cpu_dropout": "torch"}
    assert recorded_cpu_dropout({"model": "transformer", "environment": new}) == "torch"
