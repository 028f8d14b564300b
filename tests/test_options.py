"""Options declared once: CLI flags, sweep-file keys and their types come from the config dataclasses."""

import math

import pytest
from typer.testing import CliRunner

from bench.cli import app
from bench.config import ConfigError, RunConfig
from bench.options import FILE_KEYS, OPTIONS, axes, check_value

runner = CliRunner()

# Every key a sweep file accepted before the options were derived from the dataclasses.
FORMER_FILE_KEYS = {
    "models", "batch_size", "slate_length", "candidates", "user_dim", "item_dim", "loss", "seed", "profile",
    "seeds", "candidate_ratio", "batches", "epochs", "valid_slates", "test_slates", "d_model", "threads",
    "device", "precision", "compile", "isolation", "timeout", "executor", "ray_address", "ray_cpus", "retries",
    "baseline", "model_arg", "slate_min", "initial_noise", "click_model", "eta", "labels", "data", "data_path",
    "initial_ranker",
}  # fmt: skip


def test_sweep_file_keys_are_unchanged():
    # Later additions: the training settings that TrainConfig always had, reachable since the tuning issue,
    # and the measurement's own sizes (MeasureConfig).
    later = {"lr", "amsgrad", "warmup_steps", "select", "cpu_dropout", "patience"}
    measure = {"latency_requests", "throughput_blocks", "min_block_seconds"}
    worlds = {"world", "world_strength", "world_topics", "world_window"}
    budget = {"memory_limit"}  # issue 30: each cell's memory budget
    assert FILE_KEYS == FORMER_FILE_KEYS | later | measure | worlds | budget


def test_axes_keep_the_product_order():
    assert [a.name for a in axes()] == [
        "models", "world", "loss", "lr", "batch_size", "slate_length", "user_dim", "item_dim", "candidates"
    ]  # fmt: skip


@pytest.mark.parametrize(
    "line, message",
    [
        ('epochs = "2"', "epochs expects an integer, got '2'"),
        ("epochs = [1, 2]", "epochs takes one value, not a list"),
        ("batches = 1.7", "batches expects an integer, got 1.7"),
        ('compile = "yes"', "compile expects true or false, got 'yes'"),
        ("eta = nan", "eta must be a finite number"),
        ("timeout = inf", "timeout must be a finite number"),
        ("batch_size = [64, 2.5]", "batch-size expects an integer, got 2.5"),
        ("seeds = true", "seeds expects an integer, got True"),
        ("colour = 3", "unknown key(s) colour"),
        ("executor = 'docker'", "unknown executor 'docker'"),
        ("ray_cpus = 0", "ray-cpus must be positive"),
        ("latency_requests = 0", "latency-requests must be at least 1, got 0"),
    ],
)
def test_bad_sweep_file_value_is_one_error_line(tmp_path, line, message):
    sweep = tmp_path / "bad.toml"
    sweep.write_text(line + "\n")
    out = tmp_path / "out"
    result = runner.invoke(app, ["run", "--profile", "smoke", "--sweep", str(sweep), "--out", str(out)])
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith("error: ") and message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not out.exists()


def test_nan_on_the_command_line_is_rejected(tmp_path):
    result = runner.invoke(app, ["run", "--profile", "smoke", "--eta", "nan", "--out", str(tmp_path / "o")])
    assert result.exit_code == 2 and "eta must be a finite number" in result.stderr


def test_inf_initial_noise_is_the_random_order(tmp_path):
    sweep = tmp_path / "noise.toml"
    sweep.write_text("initial_noise = inf\nmodels = 'mlp'\n")
    result = runner.invoke(
        app, ["run", "--profile", "smoke", "--sweep", str(sweep), "--dry-run", "--out", str(tmp_path)]
    )
    assert result.exit_code == 0, result.output
    assert check_value("initial_noise", math.inf) == math.inf


@pytest.mark.parametrize(
    "settings, executor",
    [
        ({}, "process"),
        ({"executor": "local"}, "process"),
        ({"isolation": "none"}, "inline"),
        ({"isolation": "none", "executor": "local"}, "inline"),
        ({"isolation": "process"}, "process"),
        ({"executor": "inline"}, "inline"),
        ({"executor": "ray"}, "ray"),
    ],
)
def test_deprecated_switches_map_onto_the_executor(settings, executor):
    assert RunConfig.from_settings(settings).executor == executor


def test_run_config_validates_itself():
    with pytest.raises(ConfigError, match="timeout must be positive"):
        RunConfig(timeout=0)
    with pytest.raises(ConfigError, match="retries must be at least 0"):
        RunConfig(retries=-1)


def test_help_is_grouped_in_panels():
    result = runner.invoke(app, ["run", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    panels = ["Workload", "Models and training", "Measurement", "Execution", "Output"]
    positions = [result.stdout.index(f"─ {panel} ") for panel in panels]
    assert positions == sorted(positions)
    assert {o.panel for o in OPTIONS.values()} == set(panels)
