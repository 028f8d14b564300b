"""`bench export`: one flat row per cell, named as the metric catalog names the values, equal to the records."""

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

import bench.export
from bench.cli import app
from bench.records import latest_records

ROOT = Path(__file__).resolve().parent.parent
DEFAULT = ROOT / "results" / "reference" / "default"
SPEEDS = ("train_samples_per_s", "infer_samples_per_s", "latency_b1_p50_ms")
runner = CliRunner()


@pytest.fixture
def run_dir(tmp_path):
    run = tmp_path / "default"
    run.mkdir()
    shutil.copy(DEFAULT / "records.jsonl", run / "records.jsonl")
    return run


def _records_by_key(run: Path) -> dict[str, dict]:
    return {r["key"]: r for r in latest_records(run)}


def test_the_csv_has_one_row_per_cell_whose_accuracy_and_speeds_are_the_records(run_dir):
    result = runner.invoke(app, ["export", str(run_dir), "--format", "csv"])
    assert result.exit_code == 0, result.output
    table = pd.read_csv(run_dir / "cells.csv")
    records = _records_by_key(run_dir)
    assert sorted(table["key"]) == sorted(records) and len(table) == 12
    assert list(table.columns[:4]) == ["key", "model", "seed", "status"]
    for row in table.itertuples():
        record = records[row.key]
        assert row.slate_acc == record["metrics"]["slate_acc"]
        for speed in SPEEDS:
            value = record["measurements"].get(speed)
            assert (pd.isna(getattr(row, speed)) and value is None) or getattr(row, speed) == value, (row.model, speed)
    trained = table[table["model"] == "transformer"].iloc[0]
    timing = records[trained["key"]]["timings"]["train_samples_per_s"]
    assert trained["train_samples_per_s_ci_low"] == timing["ci_low"]


def test_json_rows_equal_the_csv_rows(run_dir, tmp_path):
    out = tmp_path / "cells.json"
    assert runner.invoke(app, ["export", str(run_dir), "--format", "json", "--out", str(out)]).exit_code == 0
    rows = json.loads(out.read_text())
    records = _records_by_key(run_dir)
    assert {r["key"]: r["slate_acc"] for r in rows} == {k: r["metrics"]["slate_acc"] for k, r in records.items()}


def test_parquet_without_pyarrow_is_one_error_line_and_writes_nothing(run_dir, monkeypatch):
    monkeypatch.setattr(bench.export, "parquet_available", lambda: False)
    result = runner.invoke(app, ["export", str(run_dir), "--format", "parquet"])
    assert result.exit_code == 2
    assert result.stderr.startswith("error: ") and "pyarrow" in result.stderr and result.stderr.count("\n") == 1
    assert not (run_dir / "cells.parquet").exists()


def test_bad_format_and_missing_run_are_refused(run_dir, tmp_path):
    assert runner.invoke(app, ["export", str(run_dir), "--format", "xlsx"]).exit_code == 2
    assert runner.invoke(app, ["export", str(tmp_path / "nowhere")]).exit_code == 2


def test_units_come_from_the_catalog():
    result = runner.invoke(app, ["export", ".", "--units"])
    assert result.exit_code == 0
    units = dict(line.split("\t") for line in result.stdout.splitlines())
    assert units["train_samples_per_s"] == "samples/s" and units["latency_b1_p50_ms"] == "ms"
