"""benchmarks/summarize.py fails (exit 1) when the speed suite missed a target, so `nox -s benchmarks` fails too."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def suite_json(tmp_path: Path, harness_s: float, bare_s: float, step_bare_s: float) -> Path:
    """A pytest-benchmark JSON of the training pair and one model's step (3 rounds), times in seconds."""

    def bench(name: str, median: float, **extra) -> dict:
        return {"name": name, "stats": {"median": median, "min": median, "rounds": 3}, **extra}

    step = {
        "params": {"name": "mlp"},
        "extra_info": {"steps": 10, "samples": 640, "seconds": {"harness": [0.1] * 3, "bare": [step_bare_s] * 3}},
    }
    data = {
        "machine_info": {"cpu": {"brand_raw": "test cpu", "count": 2}, "python_version": "3.11"},
        "datetime": "2026-01-01T00:00:00",
        "benchmarks": [
            bench("test_training_harness_loop", harness_s),
            bench("test_training_bare_loop", bare_s),
            bench("test_model_step[mlp]", 0.1, **step),
        ],
    }
    path = tmp_path / "benchmarks.json"
    path.write_text(json.dumps(data))
    return path


def summarize(path: Path) -> subprocess.CompletedProcess:
    script = ROOT / "benchmarks" / "summarize.py"
    return subprocess.run([sys.executable, str(script), str(path)], capture_output=True, text=True, timeout=60)


def test_met_targets_exit_0(tmp_path):
    done = summarize(suite_json(tmp_path, harness_s=1.0, bare_s=1.0, step_bare_s=0.1))
    assert done.returncode == 0, done.stderr
    assert "| yes |" in done.stdout and "| NO |" not in done.stdout and done.stderr == ""


def test_a_missed_target_is_a_failure_naming_it_after_the_whole_summary(tmp_path):
    done = summarize(suite_json(tmp_path, harness_s=1.0, bare_s=0.5, step_bare_s=0.05))
    assert done.returncode == 1
    assert done.stdout.count("| NO |") == 2 and "## Forward latency" in done.stdout, "the summary is still whole"
    misses = done.stderr.strip().splitlines()
    assert len(misses) == 2 and all(line.startswith("target missed: ") for line in misses), done.stderr
    assert "harness training step vs a bare PyTorch loop: 0.50x" in misses[0] and "mlp training step" in misses[1]
