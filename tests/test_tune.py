"""bench tune: validation-only search, defaults as trial 0, resumable studies, select-best training."""

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import optuna
import pytest
import torch

from bench.cell import run_cell
from bench.config import CellConfig, TrainConfig, WorkloadConfig
from bench.data import generate
from bench.executor import InlineExecutor
from bench.records import new_record
from bench.train import train, valid_slate_acc
from bench.tune import (
    STUDY_FILE,
    Budget,
    TrialPruned,
    check_study_file,
    default_params,
    search,
    search_space,
    study_name,
    trial_records,
    trial_runner,
)
from bench.tune_report import render_tune_report
from rerankers import build_model, model_names

REPO = Path(__file__).resolve().parents[1]


inline = trial_runner(InlineExecutor())


def mlp_cell(smoke_cell):
    return smoke_cell("mlp", model_kwargs={"d_model": 16})  # the profile's dim_feedforward is not an mlp option


def test_search_never_sees_the_test_split(smoke_cell, tmp_path):
    """Trials are scored on validation only: a different test split changes no trial's value or settings."""
    base = mlp_cell(smoke_cell)
    other = replace(base, workload=replace(base.workload, test_slates=base.workload.test_slates * 2))
    runs = []
    for name, cell in (("a", base), ("b", other)):
        search(cell, tmp_path / name, Budget(trials=3, seeds=1), inline)
        runs.append(trial_records(tmp_path / name))
    assert all(r["config"]["eval_split"] == "valid" for run in runs for r in run)
    assert all(r["metrics"]["test_slates"] == base.workload.valid_slates for run in runs for r in run)
    values = [[(r["tuning"]["params"], r["tuning"]["value"]) for r in run] for run in runs]
    assert values[0] == values[1]


def test_trial_zero_is_the_defaults_and_the_best_is_no_worse(smoke_cell, tmp_path):
    base = smoke_cell("transformer")
    best = search(base, tmp_path, Budget(trials=3, seeds=1), inline)
    trials = trial_records(tmp_path)
    space = search_space(base)
    assert trials[0]["tuning"]["params"] == default_params(base, space)
    assert trials[0]["config"]["model_kwargs"]["d_model"] == base.model_kwargs["d_model"]
    values = [t["tuning"]["value"] for t in trials]
    study = optuna.load_study(study_name=study_name(base), storage=f"sqlite:///{tmp_path / STUDY_FILE}")
    assert study.best_value == max(values) >= values[0] and best == study.best_trial.params


def test_a_profile_size_outside_the_declared_choices_joins_the_space(smoke_cell):
    space = search_space(mlp_cell(smoke_cell))  # the smoke profile's d_model 16 is not a declared choice
    assert 16 in space["d_model"] and space["d_model"] == sorted(space["d_model"])
    low_lr = replace(mlp_cell(smoke_cell), train=TrainConfig(lr=1e-6))
    assert search_space(low_lr)["lr"][0] == 1e-6


@pytest.mark.parametrize("name", model_names())
def test_every_declared_search_space_names_real_options(name, smoke_cell):
    search_space(smoke_cell(name))  # raises on an option the model does not take


def test_a_pruned_trial_is_recorded_as_pruned(smoke_cell, tmp_path):
    calls = []

    def prune_the_second(cell, on_epoch):
        calls.append(cell)
        if len(calls) == 2:
            on_epoch(1, 0.5, 0.1)
            raise TrialPruned(1)
        return run_cell(cell, on_epoch)

    search(mlp_cell(smoke_cell), tmp_path, Budget(trials=3, seeds=1), prune_the_second)
    statuses = [r["status"] for r in trial_records(tmp_path)]
    assert statuses == ["ok", "pruned", "ok"]
    study = optuna.load_study(study_name=study_name(mlp_cell(smoke_cell)), storage=f"sqlite:///{tmp_path / STUDY_FILE}")
    assert [t.state.name for t in study.trials] == ["COMPLETE", "PRUNED", "COMPLETE"]


def test_a_study_killed_inside_a_write_is_rolled_back_not_called_unreadable(tmp_path):
    """A kill inside an SQLite write leaves a hot journal; the study check must let SQLite roll it back."""
    import sqlite3

    study = tmp_path / STUDY_FILE
    with sqlite3.connect(study) as connection:
        connection.execute("create table t(x)")
        connection.execute("insert into t values (1)")
    connection.close()
    writer = (
        "import os, sqlite3, sys\n"
        "c = sqlite3.connect(sys.argv[1], isolation_level=None)\n"
        "c.execute('PRAGMA cache_size=1')\n"  # pages spill into the file before the commit
        "c.execute('BEGIN')\n"
        "c.executemany('insert into t values (?)', [(os.urandom(512),) for _ in range(2000)])\n"
        "os.kill(os.getpid(), 9)\n"
    )
    subprocess.run([sys.executable, "-c", writer, str(study)], check=False)
    assert (tmp_path / f"{STUDY_FILE}-journal").exists()  # the kill left a hot journal
    check_study_file(study)
    with sqlite3.connect(study) as connection:
        assert connection.execute("select count(*) from t").fetchone() == (1,)  # the write was rolled back
    connection.close()


def test_a_killed_tune_continues_its_study_without_repeating_trials(tmp_path):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    command = [sys.executable, "-m", "bench.cli", "tune", "--models", "mlp", "--profile", "smoke"]
    command += ["--trials", "4", "--seeds", "1", "--out", str(tmp_path), "--run-id", "t"]
    trials_file = tmp_path / "t" / "trials" / "records.jsonl"
    first = subprocess.Popen(command, env=env, start_new_session=True, stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and (not trials_file.exists() or len(trials_file.read_text().splitlines()) < 2):
        time.sleep(0.2)
    os.killpg(first.pid, signal.SIGKILL)
    first.wait()
    before = [json.loads(line) for line in trials_file.read_text().splitlines()]
    assert 2 <= len(before) < 4, "the kill should land mid-search"
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    after = [json.loads(line) for line in trials_file.read_text().splitlines()]
    assert after[: len(before)] == before  # nothing recorded was lost or rewritten
    numbers = [r["tuning"]["trial"] for r in after]
    assert len(numbers) == len(set(numbers)), "a finished trial ran twice"
    assert len(after) == 4 and all(r["status"] in ("ok", "pruned") for r in after)
    assert (tmp_path / "t" / "tune.md").exists() and (tmp_path / "t" / "records.jsonl").exists()


def test_select_best_restores_the_weights_of_the_best_validation_epoch():
    config = WorkloadConfig(batch_size=64, batches=4, valid_slates=256, test_slates=64)
    data = generate(config, seed=0)
    torch.manual_seed(0)
    model = build_model("mlp", user_dim=7, item_dim=10, d_model=8)
    result = train(model, data.train, data.valid, TrainConfig(epochs=6, lr=3e-2, select="best"), 64)
    history = result.valid_slate_acc
    assert result.selected_epoch == history.index(max(history)) + 1
    assert valid_slate_acc(model, data.valid, 64) == max(history)


def test_select_last_keeps_the_final_weights():
    config = WorkloadConfig(batch_size=64, batches=4, valid_slates=256, test_slates=64)
    data = generate(config, seed=0)
    torch.manual_seed(0)
    model = build_model("mlp", user_dim=7, item_dim=10, d_model=8)
    result = train(model, data.train, data.valid, TrainConfig(epochs=3, select="last"), 64)
    assert result.selected_epoch == 3 and valid_slate_acc(model, data.valid, 64) == result.valid_slate_acc[-1]


def test_cell_keys_of_earlier_configs_do_not_change():
    assert CellConfig(model="mlp").key() == CellConfig(model="mlp", eval_split="test").key()
    assert CellConfig(model="mlp", train=TrainConfig(select="best")).key() != CellConfig(model="mlp").key()


def test_training_settings_are_options_and_sweep_axes(tmp_path):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    command = [sys.executable, "-m", "bench.cli", "run", "--models", "mlp", "--profile", "smoke", "--device", "cpu"]
    command += ["--lr", "0.01,0.003", "--select", "last", "--no-amsgrad", "--out", str(tmp_path), "--dry-run"]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "2 cells: 2 to run" in done.stdout
    bad = subprocess.run(command[:-1] + ["--select", "worst"], env=env, capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and bad.stderr.startswith("error:") and "did you mean" not in bad.stdout


def test_tune_report_gives_the_command_search_minutes_and_unequal_trial_counts(smoke_cell, tmp_path):
    def record(model: str, seed: int, minutes: int, **fields) -> dict:
        made = new_record(smoke_cell(model, seed=seed))
        made.update(started_at="2026-01-01T10:00:00+00:00", finished_at=f"2026-01-01T10:{minutes:02d}:00+00:00")
        return {**made, **fields}

    def trial(model: str, number: int, minutes: int) -> dict:
        tuning = {"trial": number, "value": 0.8, "params": {"lr": 0.001}}
        return record(model, 0, minutes, metrics={"slate_acc": 0.8}, tuning=tuning)  # a trial's valid metrics

    def final(model: str, seed: int, acc: float) -> dict:
        tuning = {"role": "default", "study": model, "params": {"lr": 0.001}}
        return record(
            model, seed, 1, metrics={"slate_acc": acc}, run={"command": "bench tune --minutes 3"}, tuning=tuning
        )

    trials = [trial("deepsets", 0, 3)] + [trial("mlp", n, 1) for n in range(3)]
    finals = [final("deepsets", s, 0.80 + 0.01 * s) for s in range(2)] + [
        final("mlp", s, 0.7 + 0.02 * s) for s in range(2)
    ]
    (tmp_path / "trials").mkdir()
    (tmp_path / "trials" / "records.jsonl").write_text("".join(json.dumps(r) + "\n" for r in trials))
    (tmp_path / "records.jsonl").write_text("".join(json.dumps(r) + "\n" for r in finals))
    report = render_tune_report(tmp_path)
    assert "Command: `bench tune --minutes 3`" in report
    rows = {line.split("|")[1].strip(): line.split("|")[3].strip() for line in report.splitlines() if "/ 0 / 0" in line}
    assert rows == {"mlp": "3.0", "deepsets": "3.0"}  # minutes of search: 3 trials of 1 min, 1 trial of 3 min
    assert "The models ran 1 to 3 trials" in report
