"""The report's axes are the sweep axes that are cell fields, named by their declarations: each swept one gets
its "Across" section, the learning rate included."""

from typer.testing import CliRunner

from bench.cli import app
from bench.options import cell_axes
from bench.tables import AXIS_COLUMNS, AXIS_LABELS, REFERENCE_RULE


def test_every_cell_axis_is_a_report_axis_with_its_declared_name():
    axes = cell_axes()
    assert AXIS_COLUMNS == [axis.name for axis in axes]
    assert "lr" in AXIS_COLUMNS and "models" not in AXIS_COLUMNS
    assert AXIS_LABELS == {axis.name: axis.title for axis in axes}
    assert AXIS_LABELS["slate_length"] == "slate length T" and AXIS_LABELS["lr"] == "learning rate"
    assert REFERENCE_RULE == (
        "each swept axis at its smallest value; a swept world at independent; a swept loss at kl; where no cell has "
        "that point (a sweep of [[sweep]] parts), the cell where the most swept values meet"
    )


def test_a_sweep_over_the_learning_rate_alone_gets_its_section(tmp_path):
    args = ["run", "--models", "mlp", "--profile", "smoke", "--batches", "2", "--epochs", "1", "--lrs", "0.001,0.01"]
    result = CliRunner().invoke(app, [*args, "--executor", "inline", "--out", str(tmp_path), "--run-id", "lr"])
    assert result.exit_code == 0, result.output
    report = (tmp_path / "lr" / "report.md").read_text()
    assert "x sweep over learning rate;" in report
    assert "## Across learning rate (nothing else swept)" in report
    header = next(line for line in report.splitlines() if line.startswith("| model ") and "learning rate" in line)
    columns = [cell.strip() for cell in header.strip("|").split("|")][1:]
    assert columns == ["learning rate = 0.001", "learning rate = 0.01"]


def test_a_learning_rate_chosen_per_model_by_a_tune_is_not_an_axis():
    from dataclasses import replace

    from bench.config import PROFILES, CellConfig
    from bench.records import new_record
    from bench.tables import records_frame, swept_axes

    base = CellConfig(model="mlp", **{k: v for k, v in PROFILES["smoke"].items() if k != "model_kwargs"})

    def record(lr: float, role: str | None) -> dict:
        cell = replace(base, train=replace(base.train, lr=lr))
        return {**new_record(cell), **({"tuning": {"role": role}} if role else {})}

    assert swept_axes(records_frame([record(0.001, None), record(0.01, None)])) == ["lr"]
    assert swept_axes(records_frame([record(0.001, "default"), record(0.01, "tuned")])) == []
