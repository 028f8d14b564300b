"""benchmarks/gpu_accept.sh cannot rot: its dry mode lists every check and validates every command's arguments."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from gpu_checks import CHECKS, main, record_problems  # noqa: E402


def accept(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    """benchmarks/gpu_accept.sh ARGS, its `python` this interpreter (activated or not)."""
    return subprocess.run(
        ["bash", "benchmarks/gpu_accept.sh", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "PYTHON": sys.executable},
    )


def test_the_dry_run_lists_every_check_and_validates_every_command(tmp_path):
    out = tmp_path / "gpu"
    done = accept(str(out), "--dry-run")
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.strip().splitlines()
    assert lines[-1] == f"DRY RUN: {len(lines) - 1} checks listed, 0 with invalid arguments"
    verdict = (out / "verdict.md").read_text()
    for name in (
        "cuda",
        "no-host-sync",
        "flops-cpu-equals-cuda",
        "data-identity",
        "smoke-fp32",
        "smoke-bf16",
        "smoke-tf32",
        "compile-two-batch-sizes",
        "seed-fp32",
        "seed-bf16",
        "oom-then-ok-process",
        "oom-then-ok-inline",
        "records-oom-inline",
        "smi-before",
        "smi-after",
    ):
        assert f"| {name} | PASS | 0 |" in verdict, name
    for check in set(CHECKS) - {"validate"}:  # every kind of check is made (validate is the dry run's own)
        assert f"gpu_checks.py {check}" in verdict
    seed_listing = (out / "logs" / "seed-bf16.log").read_text()
    assert "2 cells" in seed_listing  # the bench run was validated and listed its cells
    assert "--compile --batch-sizes 64,256" in verdict and "--epochs 2" in verdict


@pytest.mark.skipif(torch.cuda.is_available(), reason="with a GPU the script would run the whole acceptance")
def test_without_a_gpu_the_script_fails_at_once_with_its_verdict(tmp_path):
    done = accept(str(tmp_path), timeout=120)
    assert done.returncode == 1
    assert done.stdout.strip().splitlines()[-1] == "VERDICT: FAIL (1 of 1 checks failed)"
    assert "| cuda | FAIL | 1 |" in (tmp_path / "verdict.md").read_text()
    assert "torch sees no CUDA device" in (tmp_path / "logs" / "cuda.log").read_text()


def test_the_script_refuses_bad_arguments(tmp_path):
    done = accept(str(tmp_path), "--bogus", timeout=60)
    assert done.returncode == 2 and done.stderr.startswith("error: usage")


def _good_record(**changes):
    record = {
        "model": "mlp",
        "status": "ok",
        "key": "k",
        "environment": {"device": "cuda", "device_name": "NVIDIA H100 80GB HBM3", "gpu_memory_mib": 81559.0},
        "measurements": {
            "peak_source": "data sheet: H100 SXM fp32 dense",
            "train_mfu": 0.02,
            "train_flops_per_sample": 1e6,
            "infer_mfu": 0.01,
            "infer_flops_per_sample": 3e5,
            "infer_calls_per_block": 64,
            "latency_b1_p50_ms": 0.5,
            "latency_b1_cuda_p50_ms": 0.1,
            **{
                f"cuda_{kind}_{phase}_mib": value
                for phase in ("train", "infer")
                for kind, value in (("net_peak_allocated", 10.0), ("peak_allocated", 30.0), ("peak_reserved", 40.0))
            },
        },
    }
    for section, values in changes.items():
        record[section] = {**record[section], **values} if isinstance(values, dict) else values
    return record


def test_the_record_checks_pass_a_good_record_and_name_what_is_wrong():
    assert record_problems(_good_record(), "ok", set(), cuda=True) == []
    assert record_problems(_good_record(measurements={"train_mfu": 1.3}), "ok", set(), True) == ["train_mfu 1.3"]
    assert record_problems(_good_record(measurements={"infer_calls_per_block": 1}), "ok", set(), True)
    assert record_problems(_good_record(measurements={"peak_source": "unknown peak: x"}), "ok", set(), True)
    assert record_problems(_good_record(measurements={"cuda_net_peak_allocated_train_mib": -5.0}), "ok", set(), True)
    assert record_problems(_good_record(status="failed"), "ok", set(), True)[0].startswith("status failed")
    assert record_problems(_good_record(status="oom"), "ok", {"mlp"}, True) == []
    assert record_problems(_good_record(status="ok"), "ok", {"mlp"}, True)[0].startswith("status ok (wanted oom)")


def test_the_dry_runs_validation_fails_a_command_bench_would_refuse(tmp_path, capsys):
    commands = tmp_path / "pending.tsv"
    commands.write_text("good\t--profile\tsmoke\t--models\tmlp\nbad\t--profile\tsmoke\t--models\tno-such-model\n")
    assert main(["validate", str(commands), str(tmp_path)]) == 1
    assert capsys.readouterr().out.splitlines() == ["good\t0", "bad\t2"]
    assert "no-such-model" in (tmp_path / "bad.log").read_text()
