"""`bench compare` says when the two runs' records come from different conditions (device, torch, precision):
one warning line, or with --strict one error line and exit 2."""

import json
import shutil

import pytest
from typer.testing import CliRunner

from bench.cli import app
from bench.compare import environment_differences
from bench.records import load_records

runner = CliRunner()


@pytest.fixture(scope="module")
def run_a(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    args = ["run", "--models", "mlp", "--profile", "smoke", "--batches", "2", "--epochs", "1", "--executor", "inline"]
    result = runner.invoke(app, [*args, "--out", str(out), "--run-id", "a"])
    assert result.exit_code == 0, result.output
    return out / "a"


def _copy_with(run_a, tmp_path, **environment):
    run_b = tmp_path / "b"
    shutil.copytree(run_a, run_b)
    records = load_records(run_b / "records.jsonl")
    for record in records:
        record["environment"].update(environment)
    (run_b / "records.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return run_b


def test_same_conditions_compare_without_a_word(run_a, tmp_path):
    result = runner.invoke(app, ["compare", str(run_a), str(_copy_with(run_a, tmp_path)), "--strict"])
    assert result.exit_code == 0, result.output
    assert "warning" not in result.stderr and "differ" not in result.output


def test_another_torch_version_is_one_warning_line(run_a, tmp_path):
    run_b = _copy_with(run_a, tmp_path, torch="0.0.1")
    result = runner.invoke(app, ["compare", str(run_a), str(run_b)])
    assert result.exit_code == 0, result.output
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and "torch" in warnings[0] and "vs 0.0.1" in warnings[0], result.stderr
    assert "of 1 cell(s) ok in both runs" in result.stdout


def test_strict_refuses_another_device(run_a, tmp_path):
    run_b = _copy_with(run_a, tmp_path, device="cuda", device_name="NVIDIA H200")
    result = runner.invoke(app, ["compare", str(run_a), str(run_b), "--strict"])
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith("error: the runs differ in device") and "--strict refuses" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and result.stdout == ""


def test_each_condition_is_named_and_records_that_do_not_say_are_left_out():
    def record(**env):
        return {"environment": env, "config": {"precision": "fp32"}}

    a = [record(device="cpu", device_name="X", torch="2.1")]
    b = [record(device="cpu", device_name="X", torch="2.1", precision="bf16")]
    assert environment_differences(a, b) == ["precision fp32 vs bf16"]  # a takes its cell's precision
    assert environment_differences(a, [record(device="cuda", device_name="Y")]) == ["device cpu (X) vs cuda (Y)"]
    assert environment_differences(a, [{"config": {}}]) == []  # an old record without an environment
