"""bench ab: the paired statistics against brute force, the verdicts on synthetic ratios, the seeded order, and
real A/Bs at smoke size (two git revisions, resume after kill -9, a side that fails, instruction counts)."""

import itertools
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from scipy import stats
from typer.testing import CliRunner

from bench import ab as ab_module
from bench.ab import AB_FILE, AbConfig, AbPlan, AbState, order
from bench.ab_sides import Outcome, Side
from bench.ab_verdict import (
    DIFFERENT,
    IMPROVEMENT,
    INCONCLUSIVE,
    REGRESSION,
    SAME,
    SPEED_VALUES,
    PairValue,
    compare_counts,
    compare_instructions,
    judge,
)
from bench.cli import app
from bench.stats import fewest_pairs, hodges_lehmann, holm, signed_rank_p, walsh_averages

ROOT = Path(__file__).resolve().parents[1]
TESTS = ROOT / "tests"
# The smallest real work: one thread, blocks of a millisecond, a few requests (the processes are real).
TINY = [
    "--profile",
    "smoke",
    "--models",
    "mlp",
    "--threads",
    "1",
    "--train-blocks",
    "2",
    "--throughput-blocks",
    "2",
    "--latency-requests",
    "4",
    "--min-block-seconds",
    "0.001",
]
runner = CliRunner()


# --- statistics -----------------------------------------------------------------------------------------------


def _brute_force_p(d: np.ndarray) -> float:
    """Two-sided signed-rank p-value by enumerating all 2^n sign assignments of the (mid-)ranks."""
    d = d[d != 0]
    ranks = stats.rankdata(np.abs(d))
    observed = ranks[d > 0].sum()
    centre = ranks.sum() / 2
    totals = np.array([np.dot(signs, ranks) for signs in itertools.product((0, 1), repeat=len(d))])
    return float(np.mean(np.abs(totals - centre) >= abs(observed - centre) - 1e-9))


def test_the_exact_signed_rank_test_matches_scipy_and_brute_force_with_ties():
    rng = np.random.default_rng(0)
    for n in (6, 9, 12):
        d = rng.normal(0.03, 0.1, n)
        assert signed_rank_p(d) == pytest.approx(stats.wilcoxon(d, method="exact").pvalue)
    tied = np.array([0.1, 0.1, -0.1, 0.2, 0.3, 0.3, -0.05, 0.0])  # ties and a zero: scipy has no exact answer
    assert signed_rank_p(tied) == pytest.approx(_brute_force_p(tied))


def _brute_force_interval(d: np.ndarray, alpha: float = 0.05) -> tuple[float, float]:
    """Every shift the exact test does not reject: tested between consecutive Walsh averages (where the test's
    statistic is constant), the accepted stretch runs from one Walsh average to another."""
    walsh = walsh_averages(d)
    accepted = [k for k in range(len(walsh) - 1) if _brute_force_p(d - (walsh[k] + walsh[k + 1]) / 2) > alpha]
    return walsh[accepted[0]], walsh[accepted[-1] + 1]


def test_the_hodges_lehmann_interval_is_the_set_of_shifts_the_exact_test_accepts():
    rng = np.random.default_rng(1)
    for n in (6, 8, 11):
        d = rng.standard_t(3, n) * 0.1 + 0.05
        estimate, low, high, coverage = hodges_lehmann(d)
        assert estimate == pytest.approx(
            np.median([(a + b) / 2 for a, b in itertools.combinations_with_replacement(d, 2)])
        )
        assert (low, high) == pytest.approx(_brute_force_interval(d))
        assert 0.95 <= coverage < 0.99
    assert math.isnan(hodges_lehmann([0.1, 0.2, 0.3, 0.4, 0.5])[1])  # five pairs cannot cover 95%


def test_holm_and_the_fewest_pairs():
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([]) == []
    assert fewest_pairs(0.05) == 6 and fewest_pairs(0.05 / 6) == 8  # 2 / 2^n must fall below alpha
    assert 2 / 2 ** fewest_pairs(0.01) < 0.01 <= 2 / 2 ** (fewest_pairs(0.01) - 1)


# --- verdicts on synthetic pairs ------------------------------------------------------------------------------


def _pairs(ratios, contended=()):
    return [PairValue(i + 1, 100.0, 100.0 * r, i in contended) for i, r in enumerate(ratios)]


def _noisy(change, n, spread=0.02, seed=0):
    return list(np.exp(np.log1p(change) + np.random.default_rng(seed).normal(0, spread, n)))


def test_a_known_slowdown_is_a_regression_in_each_value_direction():
    judged = judge(
        {
            (0, "train_samples_per_s"): _pairs(_noisy(-0.2, 10)),  # 20% fewer samples/s: worse
            (0, "latency_b1_p50_ms"): _pairs(_noisy(0.25, 10, seed=1)),  # 25% more ms: worse
            (1, "infer_samples_per_s"): _pairs(_noisy(0.3, 10, seed=2)),  # 30% more samples/s: better
        },
        threshold=0.1,
    )
    verdicts = {(j.cell, j.name): j for j in judged}
    assert verdicts[(0, "train_samples_per_s")].verdict == REGRESSION
    assert verdicts[(0, "latency_b1_p50_ms")].verdict == REGRESSION
    assert verdicts[(1, "infer_samples_per_s")].verdict == IMPROVEMENT
    train = verdicts[(0, "train_samples_per_s")]
    assert train.low < -0.2 < train.high < 0 and train.estimate == pytest.approx(-0.2, abs=0.02)  # the true -20%
    assert train.p_holm == pytest.approx(3 * train.p)  # three values judged, all at the smallest p


def test_no_change_is_same_and_a_small_real_change_is_not_a_verdict():
    (same,) = judge({(0, "train_samples_per_s"): _pairs(_noisy(0.0, 10))}, 0.1)
    assert same.verdict == SAME and -0.1 < same.low < same.high < 0.1
    (small,) = judge({(0, "train_samples_per_s"): _pairs(_noisy(-0.05, 10))}, 0.1)  # real, below the threshold
    assert small.p < 0.01 and small.verdict == SAME


def test_too_few_pairs_are_inconclusive_with_what_more_would_take():
    (few,) = judge({(0, "train_samples_per_s"): _pairs([0.8, 0.79, 0.81])}, 0.1)
    assert few.verdict == INCONCLUSIVE and math.isnan(few.low) and math.isinf(few.detectable)
    assert few.needed >= fewest_pairs(0.05)
    (noisy,) = judge({(0, "train_samples_per_s"): _pairs(_noisy(-0.1, 10, spread=0.3))}, 0.1)
    assert noisy.verdict == INCONCLUSIVE and noisy.detectable > 0.1 and noisy.needed > 10


def test_holm_makes_many_values_need_more_pairs():
    """The same clear 20% slowdown, 10 pairs: a verdict with 6 values judged, not with 36 (Holm's first step
    then asks p < 0.05/36, below the 2/2^10 an exact test on 10 pairs can reach)."""
    slow = _pairs(_noisy(-0.2, 10))
    few = judge({(c, v): slow for c in range(2) for v in SPEED_VALUES}, 0.1)
    many = judge({(c, v): slow for c in range(12) for v in SPEED_VALUES}, 0.1)
    assert {j.verdict for j in few if j.name == "train_samples_per_s"} == {REGRESSION}
    assert {j.verdict for j in many} == {INCONCLUSIVE}


def test_an_aa_simulation_rarely_calls_anything():
    """Pairs of equal sides with a large spread (30%): out of 200 A/As of 6 values, few calls of change."""
    calls = 0
    for seed in range(200):
        rng = np.random.default_rng(seed)
        values = {(c, v): _pairs(np.exp(rng.normal(0, 0.3, 10))) for c in range(2) for v in SPEED_VALUES}
        calls += any(j.verdict in (REGRESSION, IMPROVEMENT) for j in judge(values, 0.1))
    # Holm keeps the family-wise rate at 5%: at most that, and three standard errors of 200 draws
    assert calls / 200 <= 0.05 + 3 * math.sqrt(0.05 * 0.95 / 200)


def test_contended_pairs_are_counted_and_kept():
    (j,) = judge({(0, "train_samples_per_s"): _pairs(_noisy(0.0, 10), contended={2, 5})}, 0.1)
    assert j.contended == 2 and len(j.pairs) == 10


def test_deterministic_counts_and_instructions_compare_exactly():
    assert compare_counts([849, 849], [849]) == SAME
    assert compare_counts([88640.0], [104000.0]) == DIFFERENT
    assert compare_counts([1, 2], [1]) == "VARIES within a side"
    assert compare_instructions([1000.0, 1002.0], [1001.0]) == SAME
    assert compare_instructions([1000.0, 1004.0], [1200.0, 1210.0]) == DIFFERENT
    assert compare_instructions([1000.0, 1300.0], [1200.0]) == "INCONCLUSIVE"


# --- order and records ------------------------------------------------------------------------------------------


def test_the_order_of_each_pair_is_a_seeded_coin():
    first = [order(0, pair, cell) for pair in range(1, 101) for cell in range(2)]
    assert first == [order(0, pair, cell) for pair in range(1, 101) for cell in range(2)]  # reproducible
    assert first != [order(1, pair, cell) for pair in range(1, 101) for cell in range(2)]  # the seed matters
    assert 70 <= sum(o == ("A", "B") for o in first) <= 130  # a fair coin over 200 pairs
    assert {o for o in first} == {("A", "B"), ("B", "A")}


def test_the_first_process_of_a_cell_calibrates_its_blocks_and_every_later_one_does_that_work(tmp_path, monkeypatch):
    jobs = []

    def process(side, job, timeout):  # a process that calibrates (differently each time) when not told the work
        jobs.append(job)
        work = {"steps_per_block": job.get("steps_per_block") or 8 * len(jobs), "calls_per_block": 64 * len(jobs)}
        work["calls_per_block"] = job.get("calls_per_block") or work["calls_per_block"]
        result = {"status": "ok", "train_samples_per_s": [1.0, 1.1], "latency_b1_ms": [0.5, 0.6], **work}
        return Outcome(result, {}, "", 0.0)

    monkeypatch.setattr(ab_module, "run_process", process)
    plan = AbPlan(AbConfig(), {name: Side(name, None) for name in "AB"}, tmp_path)
    plan.cells = [{name: {"model": "mlp"} for name in "AB"}]
    state = AbState([])
    for pair in (1, 2):
        ab_module.run_pair(plan, state, pair, 0, say=lambda line: None)
    assert [job.get("steps_per_block") for job in jobs] == [None, 8, 8, 8]
    assert [job.get("calls_per_block") for job in jobs] == [None, 64, 64, 64]


def test_a_pair_cut_in_half_is_not_a_pair_and_a_later_session_wins():
    def process(pair, side, session, status="ok"):
        return {"kind": "process", "cell": 0, "pair": pair, "side": side, "session": session, "status": status}

    state = AbState(
        [
            process(1, "A", "s1"),
            process(1, "B", "s1"),  # a whole pair
            process(2, "B", "s1"),  # cut by a kill: half a pair
            process(2, "A", "s2"),
            process(2, "B", "s2"),  # run again whole by the next invocation
            process(3, "A", "s2"),
            process(3, "B", "s2", "failed"),
        ]
    )
    complete = state.complete_pairs(0)
    assert sorted(complete) == [1, 2] and complete[2]["A"]["session"] == "s2"
    assert [(r["pair"], r["side"], r["status"]) for r in state.unfinished()] == [
        (2, "B", "ok"),
        (3, "A", "ok"),
        (3, "B", "failed"),
    ]


# --- the command line, before anything runs ---------------------------------------------------------------------


def test_dry_run_shows_the_sides_and_writes_nothing(tmp_path):
    result = runner.invoke(
        app, ["ab", *TINY, "--b-args", "--cpu-dropout bulk", "--out", str(tmp_path / "o"), "--dry-run"]
    )
    assert result.exit_code == 0, result.output
    assert "B: working tree" in result.stdout and "--cpu-dropout bulk" in result.stdout
    assert "1 cell(s) x 10 pair(s)" in result.stdout and not (tmp_path / "o").exists()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--a-args", "--pairs 3"], "--a-args takes cell options only, not --pairs"),
        (["--b-args", "--cpu-dropout nope"], "unknown cpu dropout"),
        (["--b-args", "--no-such-flag"], "--b-args: No such option"),
        (["--a-env", "NOVALUE"], "--a-env expects KEY=VALUE"),
        (["--a", "no-such-revision-xyz"], "not a revision"),
        (["--pairs", "5", "--max-pairs", "3"], "max-pairs (3) must be at least --pairs (5)"),
        (["--threshold", "1.5"], "threshold must be below 1"),
        (["--pairs", "0"], "pairs must be at least 1"),
    ],
)
def test_bad_input_is_one_error_line_before_anything_runs(tmp_path, extra, message):
    out = tmp_path / "o"
    result = runner.invoke(app, ["ab", *TINY, "--out", str(out), "--repo", str(ROOT), *extra])
    assert result.exit_code == 2, result.output
    assert message in result.stderr and result.stderr.startswith("error: ")
    assert not out.exists()


# --- real A/Bs at smoke size --------------------------------------------------------------------------------------


def _bench_ab(*args, env=None, cwd=None):
    command = [sys.executable, "-m", "bench", "ab", *TINY, *map(str, args)]
    return subprocess.run(command, capture_output=True, text=True, env=env, cwd=cwd, timeout=600)


def _records(run_dir):
    return [json.loads(line) for line in (run_dir / AB_FILE).read_text().splitlines() if line.strip()]


def _git(repo, *args):
    identity = ["-c", "user.name=bench ab test", "-c", "user.email=ab@example.invalid"]
    return subprocess.run(["git", "-C", str(repo), *identity, *args], capture_output=True, text=True, check=True).stdout


@pytest.mark.skipif(not (ROOT / ".git").exists(), reason="needs a git checkout of this repository")
def test_an_ab_of_two_git_revisions_runs_each_side_from_its_own_tree(tmp_path):
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "--quiet", str(ROOT), str(clone)], check=True)
    (clone / "rerankers" / "ab_test_marker.py").write_text('"""A trivial change: one more file."""\n')
    _git(clone, "add", "rerankers/ab_test_marker.py")
    _git(clone, "commit", "--quiet", "-m", "a trivial change")
    result = _bench_ab(
        "--repo", clone, "--a", "HEAD~1", "--b", "HEAD", "--pairs", "2", "--out", tmp_path, "--run-id", "r"
    )
    assert result.returncode == 0, result.stderr + result.stdout
    run_dir = tmp_path / "r"
    (plan,) = [r for r in _records(run_dir) if r["kind"] == "plan"]
    commits = {side: plan["sides"][side]["revision"] for side in "AB"}
    assert commits == {"A": _git(clone, "rev-parse", "HEAD~1").strip(), "B": _git(clone, "rev-parse", "HEAD").strip()}
    processes = [r for r in _records(run_dir) if r["kind"] == "process"]
    assert len(processes) == 4 and {r["status"] for r in processes} == {"ok"}
    for r in processes:  # each side imported its own exported tree, not the installed bench
        assert r["bench_path"] == str((run_dir / "revisions" / commits[r["side"]] / "bench").resolve())
    assert (run_dir / "revisions" / commits["B"] / "rerankers" / "ab_test_marker.py").is_file()
    report = (run_dir / "ab.md").read_text()
    assert f"revision HEAD~1 ({commits['A'][:12]})" in report and "INCONCLUSIVE" in report
    assert (run_dir / "ab_pairs.png").stat().st_size > 10_000


def test_a_killed_ab_resumes_without_repeating_or_losing_a_pair(tmp_path):
    args = ("--pairs", "2", "--out", tmp_path, "--run-id", "k")
    run_dir = tmp_path / "k"
    command = [sys.executable, "-m", "bench", "ab", *TINY, *map(str, args)]
    driver = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and driver.poll() is None:
        path = run_dir / AB_FILE
        done = path.is_file() and sum('"kind": "process"' in line for line in path.read_text().splitlines())
        if done and done >= 2:
            break
        time.sleep(0.1)
    assert driver.poll() is None, "the A/B ended before it could be killed"
    os.kill(driver.pid, signal.SIGKILL)
    driver.wait()
    before = _records(run_dir)
    finished = AbState(before).complete_pairs(0)
    assert finished  # at least one pair was recorded before the kill
    result = _bench_ab(*args)
    assert result.returncode == 0, result.stderr + result.stdout
    after = AbState(_records(run_dir))
    assert sorted(after.complete_pairs(0)) == [1, 2]
    processes = after.of("process")
    for pair, sides in finished.items():  # a pair finished before the kill is kept as it was, never run again
        assert [r for r in processes if r["pair"] == pair] == list(sides.values())
    assert len(processes) <= 4 + 1  # at most the half pair the kill cut off, which is run again whole
    assert len(after.of("plan")) == 2


@pytest.fixture
def cue_plugin(monkeypatch):
    """tests/cue_models.py in the A/B's processes only (bench ab runs in a subprocess here)."""
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]))
    monkeypatch.setenv("RERANK_BENCH_PLUGINS", "cue_models")
    monkeypatch.delenv("FAIL_SIDE", raising=False)


def test_a_side_that_fails_is_named_and_the_pairs_so_far_are_kept(tmp_path, cue_plugin):
    args = ["--models", "test-fails-on-cue", "--b-env", "SIDE_MARK=b", "--out", tmp_path, "--run-id", "f"]
    first = _bench_ab(*args, "--pairs", "1")
    assert first.returncode == 0, first.stderr + first.stdout
    failing = _bench_ab(*args, "--pairs", "2", env={**os.environ, "FAIL_SIDE": "b"})
    assert failing.returncode == 1, failing.stderr + failing.stdout
    assert "error: side B: working tree" in failing.stderr and "SIDE_MARK=b" in failing.stderr
    assert "in pair 2, cell test-fails-on-cue" in failing.stderr and "injected failure of side b" in failing.stderr
    assert "kept" in failing.stderr
    state = AbState(_records(tmp_path / "f"))
    assert sorted(state.complete_pairs(0)) == [1]
    (failed,) = [r for r in state.of("process") if r["status"] != "ok"]
    assert failed["side"] == "B" and failed["pair"] == 2 and "injected failure" in failed["error"]
    assert "injected failure" in (tmp_path / "f" / "ab.md").read_text()  # the report so far lists it


def test_a_run_directory_resumes_only_the_ab_it_holds(tmp_path):
    from bench.ab import AbConfig, AbPlan, check_resumable
    from bench.ab_sides import Side
    from bench.errors import ConfigError

    def plan(b_env):
        sides = {"A": Side("A", None), "B": Side("B", None, env=b_env)}
        made = AbPlan(AbConfig(), sides, tmp_path)
        made.cells = [{"A": {"key": "k"}, "B": {"key": "k"}}]
        return made

    held = AbState([{"kind": "plan", "identity": plan({"SLOWABLE_SLOW": "1"}).identity()}])
    check_resumable(held, plan({"SLOWABLE_SLOW": "1"}))  # the same A/B continues
    with pytest.raises(ConfigError, match="holds another A/B \\(its sides differ"):
        check_resumable(held, plan({"SLOWABLE_SLOW": "0"}))


@pytest.mark.skipif(shutil.which("valgrind") is None, reason="valgrind is not installed (the instruction channel)")
def test_instructions_are_counted_under_callgrind_for_training_steps_and_requests(tmp_path):
    from bench.ab_sides import Side, callgrind_counts, run_process

    settings = {"profile": "smoke", "models": "mlp", "device": "cpu", "threads": 1}
    job = {"mode": "instructions", "cell": 0, "settings": settings, "instruction_steps": 2, "instruction_requests": 5}
    outcome = run_process(Side("A", None, settings=settings), job, None, tmp_path)
    assert outcome.result["status"] == "ok", outcome.result
    counts = callgrind_counts(tmp_path)
    assert outcome.result["counted"] == {"train": 2, "latency": 5}
    assert set(counts) == {"train", "latency"}
    assert counts["train"] / 2 > 3 * counts["latency"] / 5 > 0  # a training step is several requests' work


def test_client_requests_are_harmless_outside_valgrind():
    if not (sys.platform.startswith("linux") and os.uname().machine == "x86_64"):
        pytest.skip("valgrind client requests are issued on x86-64 Linux only")
    from bench.fixed_work import RUNNING_ON_VALGRIND, ClientRequests

    assert ClientRequests()(RUNNING_ON_VALGRIND) == 0


@pytest.mark.timing
def test_ab_finds_a_model_made_slower_and_nothing_else(tmp_path):
    """One slowed A/B of the calibration (benchmarks/ab_calibration.py: smoke size, 10 pairs, test-slowable ~20%
    slower on side B): its training or inference speed a REGRESSION, no verdict of change on the MLP. Timing
    dependent: run it on a quiet machine (pytest -m timing); results/reference/ab.md is the full calibration."""
    from bench.ab_report import read_result

    script = ROOT / "benchmarks" / "ab_calibration.py"
    only = ["--aa-runs", "0", "--slow-runs", "1", "--no-default", "--no-instructions", "--out", str(tmp_path)]
    assert subprocess.run([sys.executable, str(script), *only], timeout=1800).returncode == 0
    result = read_result(tmp_path / "ab" / "smoke-slow-1")
    verdicts = {(result.label(j.cell), j.name): j.verdict for j in result.judgements}
    slowed = [verdicts[("test-slowable", name)] for name in ("train_samples_per_s", "infer_samples_per_s")]
    assert REGRESSION in slowed, verdicts
    assert not any(v in (REGRESSION, IMPROVEMENT) for (model, _), v in verdicts.items() if model == "mlp"), verdicts


def test_the_report_is_written_from_the_records_alone(tmp_path):
    """ab.md and its plot from synthetic records: the verdicts, the deterministic counts, instruction counts,
    every pair with its conditions, and a process outside any pair."""
    from bench.ab_report import PLOT_FILE, write_ab_report
    from bench.records import append_record

    cell = {"model": "mlp", "key": "k", "config": {"measure": {"throughput_blocks": 7, "latency_requests": 200}}}
    plan = {
        "kind": "plan",
        "session": "s",
        "identity": {},
        "cells": [{"A": cell, "B": cell}],
        "command": "bench ab",
        "sides": {s: {"describe": f"{s}: working tree"} for s in "AB"},
        "started_at": "2026-01-01T00:00:00",
        "config": {"threshold": 0.1, "order_seed": 0, "train_blocks": 10},
        "environment": {"cpu": "test cpu"},
    }
    records = [plan]
    for pair in range(1, 11):
        for side, speed in (("A", 100.0), ("B", 80.0 * (1 + 0.01 * (pair % 3)))):
            records.append(
                {
                    "kind": "process",
                    "session": "s",
                    "cell": 0,
                    "pair": pair,
                    "side": side,
                    "status": "ok",
                    "order": "AB",
                    "values": {"train_samples_per_s": speed, "latency_b1_p50_ms": 1.0},
                    "deterministic": {"parameters": 849, "train_flops_per_sample": 100.0 if side == "A" else 117.0},
                    "conditions": {
                        "other_cpu_fraction": 0.2 if pair == 4 else 0.01,
                        "steal_seconds": 0.0,
                        "load_1min_before": 0.5,
                        "contended": pair == 4,
                    },
                }
            )
    records.append(
        {
            "kind": "process",
            "session": "s",
            "cell": 0,
            "pair": 11,
            "side": "B",
            "status": "failed",
            "error": "RuntimeError: boom",
            "values": {},
            "deterministic": {},
            "conditions": {},
        }
    )
    for side, count in (("A", 1000), ("A", 1004), ("B", 1170)):
        records.append(
            {
                "kind": "instructions",
                "cell": 0,
                "side": side,
                "status": "ok",
                "counts": {"train": 3 * count},
                "per": {"train": 3},
            }
        )
    for record in records:
        append_record(tmp_path / AB_FILE, record)
    path, result = write_ab_report(tmp_path)
    text = path.read_text()
    train = next(line for line in text.splitlines() if line.startswith("| mlp | train"))
    assert "**REGRESSION**" in train and "| 10 | 1 |" in train  # 10 pairs, 1 contended
    latency = next(line for line in text.splitlines() if line.startswith("| mlp | latency"))
    assert "**SAME**" in latency
    assert "| mlp | parameters | 849 | 849 | +0.0% | SAME |" in text
    assert "| mlp | train_flops_per_sample | 100 | 117 | +17.0% | DIFFERENT |" in text
    assert "| mlp | instructions per step | 1,000, 1,004 | 1,170 | +16.8% | 0.4% | DIFFERENT |" in text
    pair_rows = [line for line in text.splitlines() if line.startswith("| ") and "| AB |" in line]
    assert len(pair_rows) == 10 and [row.split(" | ")[0] for row in pair_rows if "contended" in row] == ["| 4"]
    assert "| 11 | mlp | B | failed | RuntimeError: boom |" in text  # outside any pair, kept and shown
    assert result.regressions == 1 and (tmp_path / PLOT_FILE).stat().st_size > 10_000
