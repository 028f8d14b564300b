"""LETOR loader: layouts, slates, cache, line-level errors, and a run end to end through the CLI."""

from dataclasses import replace

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from bench import letor
from bench.cli import app
from bench.config import WorkloadConfig
from bench.letor import LetorError, load_letor, read_file, resolve_files
from bench.records import load_records

runner = CliRunner()
FEATURES = 6


def letor_lines(queries: int, seed: int, first_qid: int = 1, features: int = FEATURES) -> list[str]:
    """Documents whose relevance follows feature 1 (plus noise); 1..14 documents per query."""
    rng = np.random.default_rng(seed)
    lines = []
    for q in range(queries):
        for _ in range(rng.integers(1, 15)):
            x = rng.normal(size=features)
            label = int(np.clip(np.round(1.2 * x[0] + 1.5 + 0.4 * rng.normal()), 0, 4))
            values = " ".join(f"{j + 1}:{v:.4f}" for j, v in enumerate(x))
            lines.append(f"{label} qid:{first_qid + q} {values} # doc")
    return lines


def write_split(path, lines):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture
def letor_dir(tmp_path):
    fold = tmp_path / "MSLR" / "Fold1"
    write_split(fold / "train.txt", letor_lines(300, 0))
    write_split(fold / "vali.txt", letor_lines(60, 1, first_qid=1000))
    write_split(fold / "test.txt", letor_lines(80, 2, first_qid=2000))
    return fold


def config(path, **changes) -> WorkloadConfig:
    base = WorkloadConfig(data="letor", data_path=str(path), labels="graded", batch_size=32, batches=4)
    return replace(base, **changes)


def test_lists_follow_the_files(letor_dir):
    workload = load_letor(config(letor_dir, candidates=8, slate_length=5), seed=0)
    test = workload.test
    # queries with one document or no relevant one are left out of evaluation
    left_out = workload.describe()["queries_left_out"]
    n = 80 - left_out["test"]
    assert left_out["test"] > 0 and len(test) == n and len(workload.valid) == 60 - left_out["valid"]
    assert len(workload.train) == 128  # batch_size x batches caps the training queries
    assert test.inputs.items.shape == (n, 8, FEATURES + 1)  # ids are columns; 1-based files leave column 0 empty
    assert (test.inputs.items[..., 0] == 0).all()
    # the slate is the top of the initial order, padding included
    assert torch.equal(test.inputs.positions.gather(1, test.slate), torch.arange(5).expand(n, 5))
    shown = test.slate_mask.sum(dim=1)
    real = test.inputs.mask.sum(dim=1)
    assert torch.equal(shown, real.clamp(max=5)) and real.max() == 8 and real.min() >= 2
    assert (test.utility.max(dim=1).values > 0).all()
    # labels are the relevance grades of the displayed documents; the relevance is the utility
    assert torch.equal(test.labels, test.utility.gather(1, test.slate) * test.slate_mask)
    assert set(test.labels.unique().tolist()) <= {0.0, 1.0, 2.0, 3.0, 4.0}
    assert (test.inputs.items[~test.inputs.mask] == 0).all()
    assert workload.describe()["queries_in_files"] == {"train": 300, "valid": 60, "test": 80}


def test_every_document_of_a_short_query_is_a_candidate(letor_dir):
    lines = [f"{i % 3} qid:7 1:{i} 2:{-i}" for i in range(3)] + [f"{i % 2} qid:9 1:{i} 2:{i}" for i in range(12)]
    write_split(letor_dir / "test.txt", lines)
    test = load_letor(config(letor_dir, candidates=10, slate_length=5, initial_ranker="feature:1"), 0).test
    assert test.inputs.mask.sum(dim=1).tolist() == [3, 10]
    assert test.slate_mask.sum(dim=1).tolist() == [3, 5]
    # feature:1 ranks by the file's feature 1, highest first
    first = test.inputs.items[0, :, 1].masked_fill(~test.inputs.mask[0], -1e9)
    assert torch.equal(test.slate[0, :3], first.argsort(descending=True)[:3])
    assert test.labels[0].tolist() == [2.0, 1.0, 0.0, 0.0, 0.0]


def test_linear_initial_ranker_is_informative(letor_dir):
    test = load_letor(config(letor_dir, candidates=12, slate_length=12), 0).test
    top, bottom = test.labels[:, :2][test.slate_mask[:, :2]], test.labels[:, 4:][test.slate_mask[:, 4:]]
    assert top.mean() > bottom.mean() + 0.5


def test_test_lists_do_not_depend_on_the_training_size(letor_dir):
    small = load_letor(config(letor_dir), 0).test
    large = load_letor(config(letor_dir, batches=9), 0).test
    assert torch.equal(small.inputs.items, large.inputs.items) and torch.equal(small.labels, large.labels)


def test_explicit_files_and_valid_txt(letor_dir, tmp_path):
    (letor_dir / "vali.txt").rename(letor_dir / "valid.txt")
    assert resolve_files(str(letor_dir))["valid"].name == "valid.txt"
    files = ",".join(str(letor_dir / n) for n in ("train.txt", "valid.txt", "test.txt"))
    workload = load_letor(config(files), 0)
    assert len(workload.valid) == 60 - workload.describe()["queries_left_out"]["valid"] == 57


def test_parsed_arrays_are_cached_next_to_the_data(letor_dir, monkeypatch):
    path = letor_dir / "train.txt"
    first = read_file(path)
    caches = list((letor_dir / letor.CACHE_DIR).glob("train.txt.*.npz"))
    assert len(caches) == 1
    monkeypatch.setattr(letor, "_parse", lambda *a: pytest.fail("the cache was not used"))
    again = read_file(path)
    assert (first.features != again.features).nnz == 0 and np.array_equal(first.qid, again.qid)
    monkeypatch.undo()
    write_split(path, letor_lines(10, 5))  # a changed file is parsed again, and its stale cache goes
    assert len(np.unique(read_file(path).qid)) == 10
    assert len(list((letor_dir / letor.CACHE_DIR).glob("train.txt.*.npz"))) == 1


def test_progress_is_reported_chunk_by_chunk(letor_dir, monkeypatch):
    monkeypatch.setattr(letor, "CHUNK_BYTES", 4096)
    messages = []
    parsed = read_file(letor_dir / "train.txt", progress=messages.append)
    assert len(messages) > 3 and all(m.startswith("parsing train.txt:") for m in messages)
    assert len(np.unique(parsed.qid)) == 300  # queries split across chunks are whole again


def test_an_error_in_a_later_chunk_names_the_right_line(letor_dir, monkeypatch):
    monkeypatch.setattr(letor, "CHUNK_BYTES", 4096)
    lines = letor_lines(300, 0)
    lines[700] = "1 qid:3 1:0.5 2:oops"
    write_split(letor_dir / "train.txt", lines)
    with pytest.raises(LetorError, match=r"train.txt, line 701: malformed feature '2:oops'"):
        read_file(letor_dir / "train.txt")


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def test_letor_runs_end_to_end_through_the_cli(letor_dir, tmp_path):
    out = tmp_path / "results"
    result = invoke(
        "run",
        "--data",
        "letor",
        "--data-path",
        letor_dir,
        "--profile",
        "smoke",
        "--models",
        "transformer,mlp",
        "--out",
        out,
        "--run-id",
        "letor",
    )
    assert result.exit_code == 0, result.output
    records = load_records(out / "letor" / "records.jsonl")
    assert sorted(r["model"] for r in records) == ["mlp", "transformer"]
    for record in records:
        assert record["status"] == "ok", record["error"]
        assert record["config"]["workload"]["data"] == "letor"
        assert record["config"]["workload"]["labels"] == "graded"
        assert record["data"]["source"] == "letor" and record["data"]["item_dim"] == FEATURES + 1
        assert record["data"]["test_lists"] == 80 - record["data"]["queries_left_out"]["test"] == 69
        m = record["metrics"]
        assert 0 <= m["ndcg@5"] <= 1 and 0 <= m["map@5"] <= 1 and m["regret"] >= 0
        assert "label_ndcg@5" not in m  # on LETOR the graded labels are the truth: ndcg@k uses them
    report = (out / "letor" / "report.md").read_text()
    headline, details, ranking = [line for line in report.splitlines() if line.startswith("| model")][:3]
    assert "ndcg@5" in headline and "map@5" in details
    assert all(f"{metric}@{k}" in ranking for metric in ("ndcg", "map", "precision") for k in (1, 3, 5))
    rows = [line for line in report.splitlines() if line.startswith("| transformer") or line.startswith("| mlp")]
    for table, row_lines, metric in ((headline, rows[:2], "ndcg@5"), (details, rows[2:4], "map@5")):
        columns = [c.strip() for c in table.strip("|").split("|")]
        for row in row_lines:
            cells = dict(zip(columns, (c.strip() for c in row.strip("|").split("|")), strict=True))
            assert float(cells[metric]) > 0
    assert "LETOR data" in report and "300 / 57 / 69 train / valid / test queries" in report  # those that can rank


def bad(letor_dir, split_file: str, lines: list[str]):
    write_split(letor_dir / split_file, lines)


@pytest.mark.parametrize(
    "damage, message",
    [
        (
            lambda d: bad(d, "train.txt", ["1 qid:1 1:0.5", "2 qid:1 1:abc", "0 qid:2 1:1"]),
            "train.txt, line 2: malformed",
        ),
        (lambda d: bad(d, "vali.txt", ["1 qid:1 1:0.5", "0 1:0.3 2:0.1"]), "vali.txt, line 2: missing qid"),
        (lambda d: bad(d, "test.txt", ["x qid:1 1:0.5"]), "test.txt, line 1: the label 'x' is not a number"),
        (lambda d: bad(d, "test.txt", ["1 qid:a 1:0.5"]), "test.txt, line 1: qid 'a' is not an integer"),
        (lambda d: bad(d, "test.txt", ["1 qid:1 2:0.5 1:0.5"]), "test.txt, line 1: feature ids must increase"),
        (
            lambda d: bad(d, "test.txt", ["1 qid:1 1:0.5", "1 qid:1 1:0.5 9:1"]),
            "test.txt, line 2: feature id 9 is beyond the train split's features",
        ),
        (lambda d: bad(d, "vali.txt", []), "vali.txt: no documents (empty split)"),
        (lambda d: bad(d, "vali.txt", ["# only a comment"]), "vali.txt: no documents (empty split)"),
        (lambda d: (d / "test.txt").unlink(), "has no test.txt"),
        (lambda d: None, "holds folds (Fold1); pass one of them"),
    ],
)
def test_bad_letor_input_is_one_line_and_exit_2(letor_dir, tmp_path, damage, message):
    damage(letor_dir)
    path = letor_dir.parent if "folds" in message else letor_dir
    out = tmp_path / "results"
    result = invoke(
        "run", "--data", "letor", "--data-path", path, "--profile", "smoke", "--models", "mlp", "--out", out
    )
    assert result.exit_code == 2, result.output
    assert message in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.output
    assert not out.exists()


@pytest.mark.parametrize(
    "args, message",
    [
        (["--data", "letor"], "needs --data-path"),
        (["--data", "letor", "--data-path", "nowhere"], "nowhere: no such directory"),
        (["--data", "letor", "--data-path", "a,b"], "exactly TRAIN,VALID,TEST"),
        (["--data", "letor", "--data-path", "x", "--slate-min", "2"], "slate-min applies to --data synthetic only"),
        (["--data", "letor", "--data-path", "x", "--initial-ranker", "bm25"], "initial-ranker must be"),
        (["--data", "csv"], "unknown data source 'csv'"),
        (["--data-path", "x"], "data-path applies to --data letor only"),
    ],
)
def test_bad_data_options(tmp_path, args, message):
    result = invoke("run", "--profile", "smoke", "--models", "mlp", "--out", tmp_path / "r", *args)
    assert result.exit_code == 2, result.output
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_initial_ranker_feature_beyond_the_data_is_an_error(letor_dir, tmp_path):
    args = ["--data", "letor", "--data-path", letor_dir, "--initial-ranker", "feature:40"]
    result = invoke("run", "--profile", "smoke", "--models", "mlp", "--executor", "inline", "--out", tmp_path, *args)
    assert result.exit_code == 2, result.output
    assert "feature:40: the data has feature ids up to 6" in result.stderr
