"""The stability benchmark at smoke size: it runs, and its table says what the records say."""

import importlib.util
import os
import sys
from pathlib import Path

import pytest

from bench.records import load_records
from rerankers import registry

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "stability.py"


def load_script():
    spec = importlib.util.spec_from_file_location("stability", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def restored_plugins(monkeypatch):
    """The script registers the test plugin model for itself and its cells: undo that afterwards."""
    monkeypatch.setenv("PYTHONPATH", os.environ.get("PYTHONPATH", ""))
    monkeypatch.setenv(registry.PLUGINS_ENV, os.environ.get(registry.PLUGINS_ENV, ""))
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.setattr(registry, "_plugins_loaded", False)
    yield
    registry.unregister("test-slowable")
    sys.modules.pop("speed_models", None)


def test_stability_runs_the_cells_back_to_back_and_writes_the_table(tmp_path, restored_plugins):
    stability = load_script()
    stability.main(["--profile", "smoke", "--models", "mlp", "--runs", "2", "--executor", "inline",
                    "--floor-seconds", "0.05", "--aa-models", "mlp", "--out", str(tmp_path)])  # fmt: skip
    runs = [load_records(tmp_path / "stability" / f"run-{i}" / "records.jsonl") for i in (1, 2)]
    assert [len(r) for r in runs] == [1, 1] and all(r[0]["status"] == "ok" for r in runs)
    text = (tmp_path / "stability.md").read_text()
    trains = [r[0]["measurements"]["train_samples_per_s"] for r in runs]
    row = next(line for line in text.splitlines() if line.startswith("| mlp | training throughput"))
    cv = stability.coefficient_of_variation(trains)
    assert f"| 2 | {sum(trains) / 2:.4g} | {100 * cv:.1f}%" in row
    assert "Noise floor" in text and "run-to-run CV" in text
    assert "| latency at batch 1, p50 (ms) |" in text
    assert "### A/A: two runs of `--models mlp`" in text and "### test-slowable made ~20% slower" in text
    slowed = load_records(tmp_path / "stability" / "slow-after" / "records.jsonl")
    assert {r["model"] for r in slowed} == {"mlp", "test-slowable"} and all(r["status"] == "ok" for r in slowed)
    # --rejudge runs nothing and rewrites only the compare section, from the kept pairs
    head = text.split(stability.COMPARE_HEADING)[0]
    stability.main(["--rejudge", "--aa-models", "mlp", "--out", str(tmp_path)])
    rejudged = (tmp_path / "stability.md").read_text()
    assert rejudged.startswith(head) and "stability.py --rejudge" in rejudged
    assert rejudged.split("### A/A")[1] == text.split("### A/A")[1]  # same records, same verdicts
    assert len(load_records(tmp_path / "stability" / "aa-2" / "records.jsonl")) == 1


def test_coefficient_of_variation():
    stability = load_script()
    assert stability.coefficient_of_variation([10.0, 10.0]) == 0
    assert abs(stability.coefficient_of_variation([9.0, 11.0]) - 2**0.5 / 10) < 1e-12
    assert stability.coefficient_of_variation([5.0]) is None
