import json

import pytest
import torch
from typer.testing import CliRunner

from bench.cli import app
from bench.records import SCHEMA_VERSION, load_records

runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("results")
    # The founding pair; every registered model runs through the CLI in tests/test_zoo.py.
    result = invoke("run", "--models", "mlp,transformer", "--profile", "smoke", "--out", out, "--run-id", "smoke")
    return out / "smoke", result


def test_smoke_run_writes_records_and_report(smoke_run):
    run_dir, result = smoke_run
    assert result.exit_code == 0, result.output
    records = load_records(run_dir / "records.jsonl")
    assert sorted(r["model"] for r in records) == ["mlp", "transformer"]
    assert all(r["status"] == "ok" for r in records)
    assert len({r["data_key"] for r in records}) == 1  # both models saw the same data
    report = (run_dir / "report.md").read_text()
    assert "| transformer" in report and "| mlp" in report
    assert "| slate_acc" in report and "Δ slate_acc vs mlp" in report
    assert "train (samples/s)" in report and "peak RSS (MiB)" in report


def test_report_rebuilds_from_records_alone(smoke_run):
    run_dir, _ = smoke_run
    original = (run_dir / "report.md").read_text()
    (run_dir / "report.md").unlink()
    result = invoke("report", run_dir)
    assert result.exit_code == 0, result.output
    assert (run_dir / "report.md").read_text() == original


def test_rerun_skips_recorded_cells(smoke_run):
    run_dir, _ = smoke_run
    before = (run_dir / "records.jsonl").read_text()
    args = ("--models", "mlp,transformer", "--profile", "smoke", "--out", run_dir.parent, "--run-id", "smoke")
    result = invoke("run", *args)
    assert result.exit_code == 0, result.output
    assert "skipped 2 cell(s)" in result.stderr
    assert (run_dir / "records.jsonl").read_text() == before


def test_in_process_run_and_overrides(tmp_path):
    result = invoke(
        "run",
        "--models",
        "mlp",
        "--profile",
        "smoke",
        "--executor",
        "inline",
        "--out",
        tmp_path,
        "--run-id",
        "r",
        "--slate-length",
        "3",
        "--candidates",
        "6",
        "--d-model",
        "8",
        "--seed",
        "4",
    )
    assert result.exit_code == 0, result.output
    (record,) = load_records(tmp_path / "r" / "records.jsonl")
    assert record["config"]["workload"]["slate_length"] == 3
    assert record["config"]["workload"]["candidates"] == 6
    assert record["config"]["model_kwargs"] == {"d_model": 8}
    assert record["config"]["seed"] == 4
    assert record["measurements"]["parameters"] == (7 + 10) * 8 + 8 + 2 * (8 * 8 + 8) + 8 + 1


def test_list_shows_models_with_parameter_counts():
    result = invoke("list")
    assert result.exit_code == 0, result.output
    lines = {line.split()[0]: line for line in result.stdout.splitlines() if line.strip()}
    assert "transformer" in lines and "mlp" in lines
    assert "9,537" in lines["mlp"]


@pytest.mark.parametrize(
    "args, message",
    [
        (["--models", "transfomer"], "did you mean 'transformer'"),
        (["--batch-size", "0"], "batch-size must be positive"),
        (["--epochs", "-1"], "epochs must be positive"),
        (["--slate-length", "12", "--candidates", "10"], "longer than the candidate list"),
        (["--batch-size", "32,x"], "batch-size expects int values"),
        (["--candidate-ratio", "0.5"], "candidate-ratio must be at least 1"),
        (["--seeds", "0"], "seeds must be positive"),
        (["--timeout", "-1"], "timeout must be positive"),
        (["--isolation", "docker"], "unknown isolation 'docker'"),
        (["--baseline", "nope"], "unknown model 'nope'"),
        (["--sweep", "/nonexistent.toml"], "does not exist"),
        (["--profile", "huge"], "unknown profile 'huge'"),
        (["--device", "tpu"], "unknown device 'tpu'"),
        (["--model-arg", "nonsense"], "KEY=VALUE"),
        (["--model-arg", "colour=3"], "no selected model takes the option 'colour'"),
        (["--d-model", "-4"], "d-model must be positive"),
        (["--models", "transformer", "--model-arg", "nhead=3"], "rejects its options"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(tmp_path, args, message):
    result = invoke("run", "--profile", "smoke", "--out", tmp_path, *args)
    assert result.exit_code == 2, result.output
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.output
    assert not any(tmp_path.iterdir()), "nothing may be written for rejected input"


def test_cuda_without_gpu_is_rejected(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    result = invoke("run", "--profile", "smoke", "--device", "cuda", "--out", tmp_path)
    assert result.exit_code == 2
    assert "no CUDA GPU is available" in result.stderr


def test_report_on_missing_run_is_rejected(tmp_path):
    result = invoke("report", tmp_path / "nope")
    assert result.exit_code == 2 and "has no records.jsonl" in result.stderr


def test_torn_last_line_is_reported_and_skipped(smoke_run, tmp_path):
    run_dir, _ = smoke_run
    copy = tmp_path / "copy"
    copy.mkdir()
    text = (run_dir / "records.jsonl").read_text()
    (copy / "records.jsonl").write_text(text + text.splitlines()[0][:50])
    with pytest.warns(UserWarning, match="incomplete record"):
        assert len(load_records(copy / "records.jsonl")) == 2
    assert json.loads(text.splitlines()[0])["schema"] == SCHEMA_VERSION


def test_console_usage_errors_are_one_line(tmp_path):
    import subprocess
    import sys

    for args in (["run", "--batch-size", "abc"], ["run", "--bogus"], ["nosuchcommand"]):
        done = subprocess.run([sys.executable, "-m", "bench.cli", *args], capture_output=True, text=True, cwd=tmp_path)
        assert done.returncode == 2, (args, done.stderr)
        assert done.stderr.startswith("error: ") and len(done.stderr.strip().splitlines()) == 1, done.stderr
