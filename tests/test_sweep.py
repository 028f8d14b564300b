"""Sweeps: axes, sweep files, resume, isolation and failure statuses, reports, compare."""

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from bench.cli import app
from bench.config import CellConfig, ConfigError
from bench.plots import pareto_front
from bench.records import append_record, load_records, new_record, pack_bits, slate_hits
from bench.stats import mean_interval, paired_seeds, paired_slates, timing_summary
from bench.sweep import build_cells

runner = CliRunner()
ROOT = Path(__file__).resolve().parents[1]


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def test_sweep_is_the_product_of_its_axes():
    cells = build_cells(
        {
            "profile": "smoke",
            "models": "transformer,mlp",
            "batch_size": "32,64,128",
            "slate_length": "3,5,10",
            "item_dim": "10,20",
            "seeds": 2,
        }
    )
    assert len(cells) == 2 * 3 * 3 * 2 * 2 == 72
    assert len({c.key() for c in cells}) == 72
    assert {(c.workload.slate_length, c.workload.candidates) for c in cells} == {(3, 6), (5, 10), (10, 20)}
    assert {c.seed for c in cells} == {0, 1}
    assert all(
        c.model_kwargs == ({"d_model": 16} if c.model == "mlp" else {"d_model": 16, "dim_feedforward": 32})
        for c in cells
    )


def test_candidates_can_be_their_own_axis_or_follow_a_ratio():
    own = build_cells({"profile": "smoke", "models": "mlp", "slate_length": "5", "candidates": "5,8"})
    assert [c.workload.candidates for c in own] == [5, 8]
    ratio = build_cells({"profile": "smoke", "models": "mlp", "slate_length": "4", "candidate_ratio": 2.5})
    assert ratio[0].workload.candidates == 10
    with pytest.raises(ConfigError, match="longer than the candidate list"):
        build_cells({"profile": "smoke", "models": "mlp", "slate_length": "5", "candidates": "4"})


def test_sweep_file_with_cli_overrides(tmp_path):
    sweep = tmp_path / "sweep.toml"
    sweep.write_text('profile = "smoke"\nmodels = ["mlp"]\nbatch_size = [32, 64]\nslate_length = [3, 5]\nseeds = 2\n')
    result = invoke("run", "--sweep", sweep, "--dry-run", "--out", tmp_path)
    assert result.exit_code == 0, result.output
    assert "8 cells: 8 to run, 0 already recorded" in result.stdout
    result = invoke("run", "--sweep", sweep, "--batch-size", "16", "--dry-run", "--out", tmp_path)
    assert "4 cells" in result.stdout and " 16 " in result.stdout and " 32 " not in result.stdout
    assert not any(p.is_dir() for p in tmp_path.iterdir()), "a dry run writes nothing"


def test_bad_sweep_file_is_one_line(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("batch_size = [32,\n")
    result = invoke("run", "--sweep", bad, "--out", tmp_path)
    assert result.exit_code == 2 and "not valid TOML" in result.stderr
    bad.write_text("colour = 3\n")
    result = invoke("run", "--sweep", bad, "--out", tmp_path)
    assert result.exit_code == 2 and "unknown key(s) colour" in result.stderr


def test_resume_skips_and_force_reruns_without_rewriting(tmp_path):
    args = [
        "run",
        "--models",
        "mlp",
        "--profile",
        "smoke",
        "--seeds",
        "2",
        "--executor",
        "inline",
        "--out",
        tmp_path,
        "--run-id",
        "r",
    ]
    assert invoke(*args).exit_code == 0
    path = tmp_path / "r" / "records.jsonl"
    first = path.read_text()
    again = invoke(*args)
    assert again.exit_code == 0 and "skipped 2 cell(s)" in again.stderr
    assert path.read_text() == first
    forced = invoke(*args, "--force")
    assert forced.exit_code == 0 and "ran 2 cell(s): 2 ok" in forced.stdout
    text = path.read_text()
    assert text.startswith(first) and len(text.splitlines()) == 4


def test_torn_line_is_terminated_before_the_next_append(tmp_path):
    path = tmp_path / "records.jsonl"
    cell = {**new_record(CellConfig(model="m")), "metrics": {"slate_acc": 0.5}}
    append_record(path, {**cell, "key": "a", "n": 1})
    with open(path, "a") as handle:
        handle.write('{"key": "b", "n"')  # a write cut short by a kill
    append_record(path, {**cell, "key": "c", "n": 3})
    with pytest.warns(UserWarning, match="records.jsonl:2"):
        assert [r["key"] for r in load_records(path)] == ["a", "c"]


def test_failing_cells_are_recorded_and_the_sweep_goes_on(tmp_path, faulty_plugin):
    result = invoke(
        "run",
        "--models",
        "test-raises,test-hangs,test-diverges,mlp",
        "--profile",
        "smoke",
        "--timeout",
        "12",
        "--out",
        tmp_path,
        "--run-id",
        "f",
    )
    assert result.exit_code == 1, result.output
    records = {r["model"]: r for r in load_records(tmp_path / "f" / "records.jsonl")}
    assert records["test-raises"]["status"] == "failed" and "injected failure" in records["test-raises"]["error"]
    assert records["test-hangs"]["status"] == "timeout" and "timeout of 12 s" in records["test-hangs"]["error"]
    assert records["test-diverges"]["status"] == "diverged"
    assert records["mlp"]["status"] == "ok"
    report = (tmp_path / "f" / "report.md").read_text()
    assert "## Cells that did not finish" in report
    overview = {line.split("|")[1].strip(): line for line in report.splitlines() if line.startswith("| test-")}
    assert "timeout" in overview["test-hangs"] and "failed" in overview["test-raises"]


def _driver(tmp_path, *extra):
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "bench.cli",
            "run",
            "--models",
            "mlp",
            "--profile",
            "smoke",
            "--seeds",
            "5",
            "--out",
            str(tmp_path),
            "--run-id",
            "k",
            *extra,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )


def _wait_for_records(path: Path, count: int, proc: subprocess.Popen, limit: float = 120) -> None:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if path.exists() and len(path.read_text().splitlines()) >= count:
            return
        assert proc.poll() is None, "the run ended before it could be interrupted"
        time.sleep(0.05)
    raise AssertionError("no records appeared")


def test_sigkill_midway_then_rerun_finishes_without_recomputing(tmp_path):
    path = tmp_path / "k" / "records.jsonl"
    proc = _driver(tmp_path)
    _wait_for_records(path, 2, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    before = path.read_text()
    done_before = {r["key"] for r in load_records(path)}
    assert 2 <= len(done_before) < 5
    proc = _driver(tmp_path)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    assert f"skipped {len(done_before)} cell(s)" in err
    after = path.read_text()
    assert after.startswith(before), "finished records are never rewritten"
    keys = [r["key"] for r in load_records(path)]
    assert len(keys) == len(set(keys)) == 5, "nothing recomputed, nothing lost"


def test_ctrl_c_stops_cleanly_with_records_and_report(tmp_path):
    path = tmp_path / "k" / "records.jsonl"
    proc = _driver(tmp_path)
    _wait_for_records(path, 1, proc)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "interrupted" in err and "Traceback" not in err
    assert (tmp_path / "k" / "report.md").exists()
    assert all(r["status"] == "ok" for r in load_records(path))


@pytest.fixture(scope="module")
def sweep_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("sweep")
    result = invoke(
        "run",
        "--models",
        "transformer,mlp",
        "--profile",
        "smoke",
        "--batch-size",
        "32,64",
        "--slate-length",
        "3,5",
        "--seeds",
        "2",
        "--executor",
        "inline",
        "--out",
        out,
        "--run-id",
        "s",
    )
    assert result.exit_code == 0, result.output
    return out / "s"


def test_sweep_report_has_axis_tables_plots_and_intervals(sweep_run):
    report = (sweep_run / "report.md").read_text()
    assert "16 cells: 2 models x 2 seed(s) x sweep over batch size, slate length T" in report
    for heading in (
        "## Across batch size",
        "## Across slate length T",
        "### slate accuracy",
        "### train (samples/s)",
        "### latency b1 p50 (ms)",
        "### memory over baseline (MiB)",
        "## Every cell",
        "paired t-test",
    ):
        assert heading in report, heading
    assert "slate length T = 5 (S 10)" in report
    assert "**" in report  # the best per column
    for png in (
        "accuracy_vs_slate_length.png",
        "throughput_vs_batch_size.png",
        "memory_vs_batch_size.png",
        "accuracy_vs_throughput.png",
    ):
        assert (sweep_run / png).read_bytes().startswith(b"\x89PNG"), png
        assert f"]({png})" in report


def test_report_leaves_out_a_plot_whose_values_the_records_lack(sweep_run, tmp_path):
    """Schema-1 records have no memory net of the baseline: the report is written without that plot
    (it used to stop on a log scale of nothing), and a stale plot of that name is removed."""
    old = tmp_path / "old"
    old.mkdir()
    records = load_records(sweep_run / "records.jsonl")
    for record in records:
        record["measurements"].pop("cpu_net_peak_rss_mib")
    (old / "records.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    (old / "memory_vs_batch_size.png").write_bytes(b"stale")
    result = invoke("report", old)
    assert result.exit_code == 0, result.output
    report = (old / "report.md").read_text()
    assert "memory_vs_batch_size.png" not in report and not (old / "memory_vs_batch_size.png").exists()
    assert "](throughput_vs_batch_size.png)" in report


def test_a_memory_plot_of_zero_growth_is_still_drawn(sweep_run, tmp_path):
    """Cells run inline in a process that freed memory earlier can grow none over their baseline (0 MiB): a
    real value, which a log scale cannot show; the plot is drawn on a linear scale instead of dropped."""
    zero = tmp_path / "zero"
    zero.mkdir()
    records = load_records(sweep_run / "records.jsonl")
    for record in records:
        record["measurements"]["cpu_net_peak_rss_mib"] = 0.0
    (zero / "records.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    assert invoke("report", zero).exit_code == 0
    assert (zero / "memory_vs_batch_size.png").read_bytes().startswith(b"\x89PNG")
    assert "](memory_vs_batch_size.png)" in (zero / "report.md").read_text()


def test_compare_flags_regressions_and_lists_unmatched_cells(sweep_run, tmp_path):
    same = invoke("compare", sweep_run, sweep_run)
    assert same.exit_code == 0 and "0 value(s) changed" in same.stdout
    worse = tmp_path / "worse"
    worse.mkdir()
    records = load_records(sweep_run / "records.jsonl")
    # Steady timing samples on a quiet machine in the reference, so a slow-down can be resolved.
    steady = [1000.0 * (1 + 0.001 * i) for i in range(20)]
    records[1]["timings"]["train_samples_per_s"] = timing_summary(steady, [2] * 10)  # 10 stretches of time
    records[1]["measurements"]["train_samples_per_s"] = 1000.0
    for record in records:
        record["conditions"]["contended"] = False
    reference = tmp_path / "reference"
    reference.mkdir()
    (reference / "records.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    hits = slate_hits(records[0])  # a real accuracy loss: a third of the hit slates become misses
    hits[np.flatnonzero(hits)[::3]] = False
    records[0]["per_slate"]["slate_hits"] = pack_bits(torch.from_numpy(hits))
    records[0]["metrics"]["slate_acc"] = float(hits.mean())
    records[1]["timings"]["train_samples_per_s"] = timing_summary([v * 0.5 for v in steady], [2] * 10)  # slower
    records[1]["measurements"]["train_samples_per_s"] = 500.0
    (worse / "records.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records[:-1]))
    result = invoke("compare", reference, worse, "--threshold", "0.1")
    assert result.exit_code == 1, result.output
    assert result.stdout.count("REGRESSION") == 2
    assert "slate_acc" in result.stdout and "train_samples_per_s" in result.stdout
    assert "only in" in result.stdout and "2 regression(s)" in result.stderr
    loose = invoke("compare", reference, worse, "--threshold", "0.6")
    assert loose.exit_code == 1 and "1 cell(s) of" in loose.stderr  # a cell of A missing from B fails the check
    (worse / "records.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    loose = invoke("compare", reference, worse, "--threshold", "0.6")
    assert loose.exit_code == 0, loose.output


def test_statistics_helpers():
    import numpy as np
    from scipy import stats

    values = [0.80, 0.83, 0.81, 0.86]
    mean, half = mean_interval(values)
    low, high = stats.t.interval(0.95, 3, loc=np.mean(values), scale=stats.sem(values))
    assert mean == pytest.approx(np.mean(values)) and half == pytest.approx((high - low) / 2)
    diff, half, p = paired_seeds([0.9, 0.91, 0.92], [0.7, 0.72, 0.7])
    assert diff == pytest.approx(0.2033, abs=1e-3) and p < 0.01
    a = np.array([1] * 60 + [0] * 40, dtype=bool)
    b = np.array([1] * 40 + [0] * 60, dtype=bool)
    diff, half, p = paired_slates(a, b)  # 20 discordant slates, all in a's favour
    assert diff == pytest.approx(0.2) and p == pytest.approx(2 * 0.5**20)
    assert pareto_front([(1, 5), (2, 4), (3, 1), (1, 1), (2, 2)]) == [0, 1, 2]
