"""The plots of the committed reference runs, rendered from their records alone, under the report's rules: one
style per model, baselines off the Pareto front, real tick values, every plot embedded in report.html."""

import re
import shutil
from pathlib import Path

import pytest

from bench.plot_style import MARKERS, PALETTE, model_styles, tick_text
from bench.plots import LATENCY_PLOT, SCATTER_PLOTS, _points, pareto_front
from bench.records import latest_records
from bench.report import write_report
from bench.tables import records_frame
from bench.tune_report import write_tune_report

ROOT = Path(__file__).resolve().parent.parent
REFERENCE = ROOT / "results" / "reference"
SCATTERS = [name for _, name, _ in SCATTER_PLOTS]
LINES = ["accuracy_vs_slate_length.png", "throughput_vs_batch_size.png", "memory_vs_batch_size.png"]


def _copy(run: str, tmp_path: Path) -> Path:
    target = tmp_path / run
    shutil.copytree(REFERENCE / run, target, ignore=shutil.ignore_patterns("*.png", "*.md", "*.html"))
    return target


@pytest.mark.parametrize(("run", "plots"), [("default", [*SCATTERS, LATENCY_PLOT]), ("shapes", [*LINES, *SCATTERS])])
def test_every_plot_of_a_reference_run_renders_from_its_records(run, plots, tmp_path):
    run_dir = _copy(run, tmp_path)
    report = write_report(run_dir).read_text()
    linked = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", report)
    for name in plots:
        assert (run_dir / name).read_bytes().startswith(b"\x89PNG"), name
        assert name in linked, name
    page = (run_dir / "report.html").read_text()
    assert page.count('src="data:image/png;base64,') == len(linked)
    assert '<table id="headline">' in page and "http" not in page.split("<body>")[1].replace("http-equiv", "")


def test_the_tuning_history_renders_from_the_tuned_reference(tmp_path):
    run_dir = _copy("tuned", tmp_path)
    write_tune_report(run_dir)
    assert (run_dir / "tune_history.png").read_bytes().startswith(b"\x89PNG")


def test_the_pareto_front_holds_trained_models_only():
    frame = records_frame(latest_records(REFERENCE / "default"))
    points = _points(frame[frame["status"] == "ok"], "infer_samples_per_s")
    trained = points[points["trains"]]
    assert set(points.loc[~points["trains"], "model"]) == {"oracle", "random", "initial"}
    assert len(trained) == 9
    front = pareto_front(list(zip(trained["x"], trained["acc"], strict=True)))
    assert {trained.iloc[i]["model"] for i in front} <= set(trained["model"]) and len(front) >= 2


def test_each_model_has_its_own_colour_and_marker_in_every_plot():
    many = [f"plugin-{i:02d}" for i in range(40)]
    styles = model_styles(many)
    assert len({(s.colour, s.marker) for s in styles.values()}) == len(many)
    first = list(model_styles(["transformer", "mlp", *many[:10]]).values())
    assert len({s.colour for s in first[: len(PALETTE)]}) == len(first[: len(PALETTE)])
    assert model_styles(["mlp"])["mlp"] == model_styles(["transformer", "mlp", "prm"])["mlp"]
    assert len(MARKERS) >= 8


def test_ticks_show_real_values():
    assert [tick_text(v) for v in (64, 256, 107, 112, 0.85, 29_300, 1_200_000, 1024)] == [
        "64", "256", "107", "112", "0.85", "29.3k", "1.2M", "1024"
    ]  # fmt: skip
