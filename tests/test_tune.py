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

from bench.config import CellConfig, TrainConfig, WorkloadConfig
from bench.data import generate
from bench.executor import InlineExecutor, Progress, StopCell
from bench.records import new_record
from bench.train import train, valid_slate_acc
from bench.tune import (
    STUDY_FILE,
    Budget,
    check_study_file,
    default_params,
    search,
    search_space,
    study_name,
    trial_records,
    trial_runner,
)
from bench.tune_report import render_tune_report
from rerankers import build_model, get_spec, model_names

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


def scripted_trials(epoch_one_values):
    """Trials that report the given validation value at epoch 1 (by trial order) and complete with it, untrained."""
    values = iter(epoch_one_values)

    def run(cells, on_record, on_progress):
        for cell in cells:
            value = next(values)
            on_progress(Progress(cell))
            try:
                on_progress(Progress(cell, 1, 0.5, value))
            except StopCell as stop:
                on_record(cell, stop.record)
                continue
            record = new_record(cell)
            record["metrics"] = {"slate_acc": value}
            on_record(cell, record)

    return run


def test_successive_halving_prunes_against_earlier_batches_only(smoke_cell, tmp_path):
    """Batch 0's low values are not pruned by its own better trials; batch 1's are, by batch 0's values."""
    base = mlp_cell(smoke_cell)
    search(base, tmp_path, Budget(trials=6, seeds=1), scripted_trials([0.9, 0.1, 0.9, 0.2, 0.3, 0.95]))
    records = trial_records(tmp_path)
    assert [r["status"] for r in records] == ["ok"] * 4 + ["pruned", "ok"]
    assert [r["tuning"]["batch_start"] for r in records] == [0] * 4 + [4] * 2
    assert records[4]["history"]["valid_slate_acc"] == [0.3] and records[4]["tuning"]["epochs"] == 1
    assert records[4]["tuning"]["budget"] == {"trials": 6, "minutes": None, "parallel": 1, "batch": 4}
    study = optuna.load_study(study_name=study_name(base), storage=f"sqlite:///{tmp_path / STUDY_FILE}")
    assert [t.state.name for t in study.trials] == ["COMPLETE"] * 4 + ["PRUNED", "COMPLETE"]


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
    assert "Budget: not recorded" in report
    trials[0]["tuning"]["budget"] = {"trials": None, "minutes": 3, "parallel": 2, "batch": 4}
    (tmp_path / "trials" / "records.jsonl").write_text("".join(json.dumps(r) + "\n" for r in trials))
    assert "Budget: 3 minutes of trials per model; trials asked in batches of 4, 2 at once" in render_tune_report(
        tmp_path
    )


def test_equal_trials_in_parallel_are_the_serial_trials(tmp_path):
    """--trials 8 gives both models 8 trials; --parallel 2 runs two at once and gives the trials a serial search
    gives (settings, statuses and values; in-process here, for the cheaper model, to keep the test short)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    command = [sys.executable, "-m", "bench.cli", "tune", "--models", "transformer,mlp", "--profile", "smoke"]
    command += ["--trials", "8", "--seeds", "1", "--threads", "1", "--parallel", "2", "--out", str(tmp_path)]
    done = subprocess.run([*command, "--run-id", "parallel"], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    parallel = trial_records(tmp_path / "parallel")
    assert sorted(r["model"] for r in parallel) == ["mlp"] * 8 + ["transformer"] * 8
    assert overlapping(parallel)
    mlp = [r for r in parallel if r["model"] == "mlp"]
    base = CellConfig.from_dict(next(r for r in mlp if r["tuning"]["trial"] == 0)["config"])
    search(base, tmp_path / "serial", Budget(trials=8, seeds=1), inline)
    serial = trial_records(tmp_path / "serial")
    assert not overlapping(serial)

    def summary(records):
        return sorted(json.dumps([r["status"], r["tuning"]["params"], r["tuning"]["value"]]) for r in records)

    assert summary(serial) == summary(mlp)


def overlapping(records) -> bool:
    """Whether any two trials ran at the same time, by their recorded start and finish."""
    spans = sorted((r["started_at"], r["finished_at"]) for r in records)
    return any(later[0] < earlier[1] for earlier, later in zip(spans, spans[1:], strict=False))


def test_parallel_trials_may_not_oversubscribe_the_cores(tmp_path):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    command = [sys.executable, "-m", "bench.cli", "tune", "--models", "mlp", "--profile", "smoke", "--trials", "2"]
    command += ["--threads", str(os.cpu_count()), "--parallel", "2", "--out", str(tmp_path)]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and done.stderr.startswith("error: --parallel 2 would oversubscribe")
    assert not (tmp_path / "trials").exists()


# The costliest point of a model's search space may train at most this many times its default cell's FLOPs per
# sample (the caps beside each register(...)): one full trial then costs at most about twice the default cell.
COST_CAP = 2.0


def costliest_points(space: dict) -> list[dict]:
    """Every numeric size at its largest, with each choice of the non-numeric options (pooling, say)."""
    points = [{}]
    for name, domain in space.items():
        if not isinstance(domain, list):
            continue  # a rate (lr, dropout): no cost
        numeric = all(isinstance(v, int) and not isinstance(v, bool) for v in domain)
        points = [{**p, name: v} for p in points for v in ([max(domain)] if numeric else domain)]
    return points


@pytest.mark.parametrize("name", [n for n in model_names() if get_spec(n).search_space])
def test_search_space_caps_keep_a_trial_near_the_default_cost(name):
    from bench.config import PROFILES
    from bench.flops import count_flops
    from bench.models import accepted_options

    profile = PROFILES["default"]
    workload = replace(profile["workload"], batch_size=8, batches=1, valid_slates=8, test_slates=8)
    data = generate(workload, seed=0)
    batch = next(iter(data.train.batches(8))).inputs
    defaults = accepted_options(name, profile["model_kwargs"])
    base = CellConfig(model=name, workload=workload, train=profile["train"], model_kwargs=defaults)

    def flops(options: dict) -> int:
        torch.manual_seed(0)
        model = build_model(name, user_dim=batch.user.shape[1], item_dim=batch.items.shape[2], **options)
        return count_flops(model, batch)[0]

    default = flops(defaults)
    for point in costliest_points(search_space(base)):
        ratio = flops({**defaults, **point}) / default
        assert ratio <= COST_CAP, f"{name} at {point}: {ratio:.2f} x the default cell's training FLOPs"
