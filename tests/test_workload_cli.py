"""Workload knobs and the loss through the CLI: recorded in every record, bad values rejected."""

import pytest
from typer.testing import CliRunner

from bench.cli import app
from bench.records import load_records

runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def test_knobs_and_loss_are_recorded_and_shown(tmp_path):
    knobs = ["--slate-min", "3", "--initial-noise", "0.5", "--click-model", "position-biased", "--eta", "0.5"]
    result = invoke(
        "run", "--profile", "smoke", "--models", "mlp", "--executor", "inline", "--out", tmp_path, "--run-id", "r",
        "--loss", "listnet", "--labels", "clicks", *knobs,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    (record,) = load_records(tmp_path / "r" / "records.jsonl")
    assert record["status"] == "ok", record["error"]
    w = record["config"]["workload"]
    assert (w["slate_min"], w["initial_noise"], w["click_model"], w["eta"]) == (3, 0.5, "position-biased", 0.5)
    assert record["config"]["train"]["loss"] == "listnet"
    assert 0 < record["metrics"]["judged_slates"] < record["metrics"]["test_slates"]  # some slates go unclicked
    assert 3 <= record["data"]["mean_displayed"] < 5
    report = (tmp_path / "r" / "report.md").read_text()
    assert "slate lengths 3..5, initial order by utility + noise 0.5, position-biased clicks (eta 0.5)" in report
    assert "loss listnet" in report


def test_initial_noise_inf_is_the_founding_random_order(tmp_path):
    args = ["--profile", "smoke", "--models", "mlp", "--executor", "inline", "--out", tmp_path, "--run-id", "r"]
    assert invoke("run", *args, "--initial-noise", "inf", "--labels", "graded").exit_code == 0
    (record,) = load_records(tmp_path / "r" / "records.jsonl")
    assert record["config"]["workload"]["initial_noise"] is None
    assert record["config"]["workload"]["labels"] == "graded"


@pytest.mark.parametrize(
    "args, message",
    [
        (["--loss", "listnett"], "unknown loss 'listnett'; did you mean 'listnet'?"),
        (["--initial-noise", "lots"], "initial-noise must be a number or inf"),
        (["--initial-noise", "-1"], "initial-noise must be at least 0"),
        (["--click-model", "cascde"], "unknown click model 'cascde'; did you mean 'cascade'?"),
        (["--labels", "stars"], "unknown labels 'stars'"),
        (["--slate-min", "7"], "slate-min must be between 1 and the slate length (5)"),
        (["--eta", "-1"], "eta must be at least 0"),
    ],
)
def test_bad_knobs_are_one_line_and_exit_2(tmp_path, args, message):
    result = invoke("run", "--profile", "smoke", "--out", tmp_path, *args)
    assert result.exit_code == 2, result.output
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not any(tmp_path.iterdir())
