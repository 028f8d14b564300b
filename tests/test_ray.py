"""The Ray executor on a real local cluster (ray.init(num_cpus=2) on this machine)."""

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import unload_plugin
from typer.testing import CliRunner

from bench.cli import app
from bench.records import load_records

ray = pytest.importorskip("ray", reason="the ray extra is not installed (CI installs it)")

runner = CliRunner()
ROOT = Path(__file__).resolve().parents[1]
TESTS = Path(__file__).resolve().parent
SWEEP = ["--profile", "smoke", "--models", "transformer,mlp", "--seeds", "2", "--threads", "1"]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """One local cluster for the module; its workers see the faulty test models."""
    markers = tmp_path_factory.mktemp("markers")
    env = {
        "PYTHONPATH": os.pathsep.join([str(TESTS), str(ROOT), os.environ.get("PYTHONPATH", "")]),
        "RERANK_BENCH_PLUGINS": "faulty_models",
        "FAULTY_MARKER_DIR": str(markers),
    }
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    sys.path.insert(0, str(TESTS))
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    from rerankers import registry

    registry._plugins_loaded = False
    yield markers
    ray.shutdown()
    unload_plugin("faulty_models")
    sys.path.remove(str(TESTS))
    for key, value in old.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def test_ray_run_matches_local_run(cluster, tmp_path):
    local = invoke("run", *SWEEP, "--executor", "inline", "--out", tmp_path, "--run-id", "local")
    distributed = invoke("run", *SWEEP, "--executor", "ray", "--out", tmp_path, "--run-id", "ray")
    assert local.exit_code == 0, local.output
    assert distributed.exit_code == 0, distributed.output
    accuracy = {}
    for name in ("local", "ray"):
        records = load_records(tmp_path / name / "records.jsonl")
        accuracy[name] = {r["key"]: r["metrics"]["slate_acc"] for r in records}
    assert len(accuracy["ray"]) == 4
    assert accuracy["ray"] == accuracy["local"]
    assert (tmp_path / "ray" / "report.md").exists()


def test_failed_and_killed_cells_on_ray(cluster, tmp_path):
    result = invoke(
        "run",
        "--profile",
        "smoke",
        "--models",
        "test-raises,test-killed,mlp",
        "--threads",
        "1",
        "--executor",
        "ray",
        "--retries",
        "1",
        "--out",
        tmp_path,
        "--run-id",
        "faults",
    )
    records = {r["model"]: r for r in load_records(tmp_path / "faults" / "records.jsonl")}
    assert result.exit_code == 1, result.output
    assert records["test-raises"]["status"] == "failed" and "injected failure" in records["test-raises"]["error"]
    assert (cluster / "killed-once").exists(), "the worker was killed on the first attempt"
    assert records["test-killed"]["status"] == "ok", records["test-killed"]["error"]  # retried on a new worker
    assert records["mlp"]["status"] == "ok"


def test_killed_worker_without_retries_is_recorded_failed(cluster, tmp_path):
    (cluster / "killed-once").unlink(missing_ok=True)
    result = invoke(
        "run",
        "--profile",
        "smoke",
        "--models",
        "test-killed",
        "--threads",
        "1",
        "--executor",
        "ray",
        "--retries",
        "0",
        "--out",
        tmp_path,
        "--run-id",
        "noretry",
    )
    assert result.exit_code == 1
    (record,) = load_records(tmp_path / "noretry" / "records.jsonl")
    assert record["status"] == "failed"
    assert "Worker" in record["error"] or "died" in record["error"], record["error"]


def test_resume_after_the_driver_is_stopped(tmp_path):
    args = [
        sys.executable,
        "-m",
        "bench.cli",
        "run",
        "--profile",
        "smoke",
        "--models",
        "mlp",
        "--seeds",
        "4",
        "--threads",
        "1",
        "--executor",
        "ray",
        "--ray-cpus",
        "1",
        "--out",
        str(tmp_path),
        "--run-id",
        "r",
    ]
    path = tmp_path / "r" / "records.jsonl"
    driver = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        import time

        deadline = time.monotonic() + 180
        while not (path.exists() and path.read_text().strip()) and time.monotonic() < deadline:
            assert driver.poll() is None, driver.communicate()
            time.sleep(0.1)
        driver.send_signal(signal.SIGINT)
        _, err = driver.communicate(timeout=120)
    finally:
        if driver.poll() is None:
            driver.kill()
    assert driver.returncode in (0, 130), err
    before = path.read_text()
    finished = len(load_records(path))
    again = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    if finished < 4:
        assert f"skipped {finished} cell(s)" in again.stderr
    assert path.read_text().startswith(before)
    keys = [r["key"] for r in load_records(path)]
    assert len(keys) == len(set(keys)) == 4


def test_missing_ray_is_one_clear_line(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)
    result = invoke("run", "--profile", "smoke", "--models", "mlp", "--executor", "ray", "--out", tmp_path)
    assert result.exit_code == 2
    assert 'pip install "rerank-bench[ray]"' in result.stderr


def test_a_ray_trial_is_pruned_from_its_epochs(cluster, tmp_path):
    """The tasks' epochs reach the driver's pruner: against an earlier batch no trial can beat at epoch 1, both
    Ray trials stop after epoch 1 and are recorded as pruned."""
    import optuna

    from bench.config import PROFILES, CellConfig
    from bench.ray_executor import RayExecutor
    from bench.tune import STUDY_FILE, Budget, _study, search, study_name, trial_records, trial_runner

    base = CellConfig(model="mlp", **{**PROFILES["smoke"], "model_kwargs": {"d_model": 16}, "threads": 1})
    study = _study(tmp_path, study_name(base), base.seed)
    unbeatable = optuna.trial.create_trial(
        value=2.0, intermediate_values={1: 2.0, 2: 2.0}, system_attrs={"completed_rung_0": 2.0}
    )
    study.add_trial(unbeatable)  # an earlier batch's trial: slate_acc is at most 1
    search(base, tmp_path, Budget(trials=2, seeds=1, parallel=2), trial_runner(RayExecutor()))
    records = trial_records(tmp_path)
    assert [r["status"] for r in records] == ["pruned", "pruned"]
    assert all(len(r["history"]["valid_slate_acc"]) == 1 for r in records)
    study = optuna.load_study(study_name=study_name(base), storage=f"sqlite:///{tmp_path / STUDY_FILE}")
    assert [t.state.name for t in study.trials] == ["COMPLETE", "PRUNED", "PRUNED"]
