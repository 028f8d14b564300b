"""What a newcomer meets first: piped progress lines, help texts, `bench list`, and the errors of common slips."""

import io
import shutil
from pathlib import Path

from typer.testing import CliRunner

from bench.cli import app
from bench.commands.progress import CellLines
from bench.compare import Change

ROOT = Path(__file__).resolve().parent.parent
DEFAULT = ROOT / "results" / "reference" / "default"
runner = CliRunner()


def _record(model: str, speed: float | None, contended: bool = False) -> dict:
    workload = {"batch_size": 64, "slate_length": 5}
    return {
        "model": model, "status": "ok", "error": None, "config": {"seed": 0, "workload": workload},
        "metrics": {"slate_acc": 0.8}, "measurements": {"train_samples_per_s": speed, "wall_seconds": 1.5},
        "conditions": {"contended": contended},
    }  # fmt: skip


def test_piped_progress_is_one_line_per_cell_with_count_eta_and_marks():
    stream = io.StringIO()
    lines = CellLines(3, stream)
    for record in (_record("mlp", 55_900.0), _record("random", None), _record("prm", 3830.0, contended=True)):
        lines.on_done(record)
    out = stream.getvalue().splitlines()
    assert [line.split()[0] for line in out] == ["[1/3]", "[2/3]", "[3/3]"]
    assert all("elapsed" in line and "ETA" in line for line in out)
    assert "train 55.9k/s " in out[0] and "train – " in out[1] and "train 3.83k/s! " in out[2]


def test_a_piped_run_says_device_and_threads_once_then_a_line_per_cell(tmp_path):
    args = ["run", "--models", "mlp,random", "--profile", "smoke", "--batches", "2", "--epochs", "1"]
    result = runner.invoke(app, [*args, "--executor", "inline", "--out", str(tmp_path), "--run-id", "piped"])
    assert result.exit_code == 0, result.output
    assert result.stderr.count("device cpu; torch threads per cell") == 1
    cells = [line for line in result.stderr.splitlines() if line.startswith("[")]
    assert len(cells) == 2 and all(len(line) < 160 for line in cells)
    assert (tmp_path / "piped" / "report.html").is_file()


def test_help_texts_show_no_bool_metavar_and_whole_option_names():
    for name in ("run", "tune", "list", "report", "export", "compare", "ab"):
        text = runner.invoke(app, [name, "--help"], env={"COLUMNS": "100"}).stdout
        assert "<bool>" not in text and "BOOLEAN" not in text, name
    compare = runner.invoke(app, ["compare", "--help"], env={"COLUMNS": "100"}).stdout
    assert "--include-contended" in compare and "…" not in compare
    tune = runner.invoke(app, ["tune", "--help"], env={"COLUMNS": "200"}).stdout
    assert "Seeds of the final test runs" in tune and "[3]" in tune


def test_bench_list_lines_fit_and_show_the_options_counted():
    result = runner.invoke(app, ["list"])
    assert result.exit_code == 0
    assert max(len(line) for line in result.stdout.splitlines()) < 120
    mlp = next(line for line in result.stdout.splitlines() if line.startswith("mlp "))
    assert "d_model=64" in mlp  # the default profile's width, at which the count was computed


def test_comparing_a_run_with_itself_says_so(tmp_path):
    run = tmp_path / "a"
    run.mkdir()
    shutil.copy(DEFAULT / "records.jsonl", run / "records.jsonl")
    result = runner.invoke(app, ["compare", str(run), str(run), "--all"])
    assert "same run" in result.stderr
    rows = [line for line in result.stdout.splitlines() if " s0 b512 " in line]
    assert len(rows) > 12 and max(len(line) for line in rows) < 140


def test_a_contended_speed_gets_no_verdict_either_way():
    change = Change("k", "cell", "train_samples_per_s", 1.0, 51.7, "speed", "MWU", 0.001, 0.001, True, True, False,
                    True, False)  # fmt: skip
    assert change.verdict == "contended: not judged"


def test_a_typo_in_a_sweep_file_gets_a_did_you_mean(tmp_path):
    sweep = tmp_path / "s.toml"
    sweep.write_text('models = ["mlp"]\nbatch_sise = [64]\n')
    result = runner.invoke(app, ["run", "--sweep", str(sweep), "--dry-run"])
    assert result.exit_code == 2 and "did you mean 'batch_size'" in result.stderr


def test_a_missing_data_path_names_the_flag(tmp_path):
    result = runner.invoke(app, ["run", "--models", "mlp", "--data", "letor", "--data-path", str(tmp_path / "no")])
    assert result.exit_code == 2 and "--data-path" in result.stderr
