"""The metric catalog: every recorded value has one entry, and compare reads its direction from it."""

import json

from typer.testing import CliRunner

from bench.catalog import Direction, header, lookup
from bench.cli import app
from bench.config import CellConfig, WorkloadConfig
from bench.records import append_record, new_record
from bench.stats import timing_summary

runner = CliRunner()


def test_families_and_directions():
    assert lookup("ndcg@5").label == "NDCG@5" and lookup("ndcg@5").direction is Direction.HIGHER
    assert lookup("regret").direction is Direction.LOWER
    assert lookup("judged_slates").kind == "count"
    assert lookup("latency_b1_p99_ms").direction is Direction.LOWER
    assert lookup("no_such_metric") is None
    assert header("train_samples_per_s") == "train (samples/s)"


def _run(tmp_path, name, regret, judged, latency):
    record = new_record(CellConfig(model="mlp", workload=WorkloadConfig(batches=1)))
    record["metrics"] = {"slate_acc": 0.5, "regret": regret, "judged_slates": judged}
    record["measurements"] = {"latency_b1_p50_ms": latency}
    samples = [latency * (1 + i / 1000) for i in range(10)]
    record["timings"] = {"latency_b1_ms": timing_summary(samples, segments=[2] * 5)}  # 5 bursts
    run_dir = tmp_path / name
    run_dir.mkdir()
    append_record(run_dir / "records.jsonl", json.loads(json.dumps(record)))
    return run_dir


def test_compare_follows_each_metric_direction(tmp_path):
    before = _run(tmp_path, "a", regret=0.4, judged=100, latency=2.0)
    better = _run(tmp_path, "b", regret=0.2, judged=50, latency=1.0)  # lower regret and latency: better
    result = runner.invoke(app, ["compare", str(before), str(better)])
    assert result.exit_code == 0, result.output
    assert "REGRESSION" not in result.stdout
    assert "judged_slates" not in result.stdout  # a count, not compared
    worse = _run(tmp_path, "c", regret=0.8, judged=100, latency=4.0)
    result = runner.invoke(app, ["compare", str(before), str(worse)])
    assert result.exit_code == 1
    assert result.stdout.count("REGRESSION") == 2


def test_total_acc_is_not_comparable_for_a_model_whose_undisplayed_scores_mean_nothing(tmp_path):
    from bench.report import write_report

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    for model, meaningful in (("prm", False), ("mlp", True)):
        record = new_record(CellConfig(model=model, workload=WorkloadConfig(batches=1)))
        record["model_properties"] = {"scores_undisplayed_meaningfully": meaningful}
        record["metrics"] = {"slate_acc": 0.8, "total_acc": 0.034 if model == "prm" else 0.44, "test_slates": 100}
        append_record(run_dir / "records.jsonl", json.loads(json.dumps(record)))
    report = write_report(run_dir).read_text()
    ranking = report[report.index("### Ranking metrics") :]
    prm_row = next(line for line in ranking.splitlines() if line.startswith("| prm"))
    mlp_row = next(line for line in ranking.splitlines() if line.startswith("| mlp"))
    assert "n/c" in prm_row and "0.034" not in prm_row
    assert "0.440" in mlp_row and "n/c" not in mlp_row


def test_headers_and_shown_values_come_from_the_entry():
    from bench.catalog import entries, is_quality, of_kind, short_header, shown_value, summarising

    assert header("train_mfu") == "train MFU (%)" and shown_value("train_mfu", 0.25) == 25.0
    assert shown_value("slate_acc", 0.25) == 0.25 and shown_value("no_such_metric", 0.25) == 0.25
    assert header("slate_acc") == "slate accuracy" and header("no_such_metric") == "no_such_metric"
    assert header("test_slates") == "test slates", "a count's unit is not shown"
    assert short_header("train_samples_per_s") == "train (/s)" and short_header("slate_acc") == "slate accuracy"
    assert short_header("no_such_metric") == "no_such_metric"
    latency = ["latency_b1_p50_ms", "latency_b1_p95_ms", "latency_b1_p99_ms"]
    assert [m.name for m in summarising("latency_b1_ms")] == latency
    assert [m.quantile for m in summarising("latency_b1_ms")] == [0.5, 0.95, 0.99]
    assert all(m.kind in ("speed", "latency") for m in of_kind("speed", "latency")) and of_kind("speed")
    assert {m.name for m in of_kind("accuracy")} >= {"slate_acc", "ndcg@k", "regret"}
    assert entries()[0].name == "slate_acc" and len(entries()) == len({m.name for m in entries()})
    assert is_quality("ndcg@3") and not is_quality("train_samples_per_s") and not is_quality("no_such_metric")
    assert lookup("ndcg@x") is None and lookup("nosuch@5") is None and lookup("ndcg@") is None
    assert lookup("map@10").label == "MAP@10" and lookup("map@10").name == "map@10"
