"""The stability benchmark at smoke size: it runs, and its table says what the records say."""

import importlib.util
from pathlib import Path

from bench.records import load_records

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "stability.py"


def load_script():
    spec = importlib.util.spec_from_file_location("stability", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_stability_runs_the_cells_back_to_back_and_writes_the_table(tmp_path):
    stability = load_script()
    stability.main(["--profile", "smoke", "--models", "mlp", "--runs", "2", "--executor", "inline",
                    "--floor-seconds", "0.05", "--out", str(tmp_path)])  # fmt: skip
    runs = [load_records(tmp_path / "stability" / f"run-{i}" / "records.jsonl") for i in (1, 2)]
    assert [len(r) for r in runs] == [1, 1] and all(r[0]["status"] == "ok" for r in runs)
    text = (tmp_path / "stability.md").read_text()
    trains = [r[0]["measurements"]["train_samples_per_s"] for r in runs]
    row = next(line for line in text.splitlines() if line.startswith("| mlp | training throughput"))
    cv = stability.coefficient_of_variation(trains)
    assert f"| 2 | {sum(trains) / 2:.4g} | {100 * cv:.1f}%" in row
    assert "Noise floor" in text and "run-to-run CV" in text
    assert "| latency at batch 1, p50 (ms) |" in text


def test_coefficient_of_variation():
    stability = load_script()
    assert stability.coefficient_of_variation([10.0, 10.0]) == 0
    assert abs(stability.coefficient_of_variation([9.0, 11.0]) - 2**0.5 / 10) < 1e-12
    assert stability.coefficient_of_variation([5.0]) is None
