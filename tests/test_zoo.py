"""Behaviour specific to the zoo's models and baselines (the generic contract is in test_models.py)."""

import dataclasses
import math

import pytest
import torch
from typer.testing import CliRunner

import rerankers
from bench import cell as cell_module
from bench.cli import app
from bench.data import generate
from bench.records import load_records
from rerankers import SlateBatch
from rerankers.batch import reading_order


def lists(rows: int = 4, length: int = 6, seed: int = 0, user_dim: int = 3, item_dim: int = 4) -> SlateBatch:
    g = torch.Generator().manual_seed(seed)
    return SlateBatch(
        user=torch.randn(rows, user_dim, generator=g),
        items=torch.randn(rows, length, item_dim, generator=g),
        mask=torch.ones(rows, length, dtype=torch.bool),
        positions=torch.stack([torch.randperm(length, generator=g) for _ in range(rows)]),
    )


def test_reading_order_lists_real_items_by_rank_padding_last():
    batch = SlateBatch(
        user=torch.zeros(1, 1),
        items=torch.zeros(1, 4, 1),
        mask=torch.tensor([[True, True, False, True]]),
        positions=torch.tensor([[2, 0, 1, 3]]),
    )
    assert reading_order(batch).tolist() == [[1, 0, 3, 2]]
    assert reading_order(batch, reverse=True).tolist() == [[3, 0, 1, 2]]


# --- baselines -------------------------------------------------------------------------------


def test_initial_keeps_the_displayed_order():
    batch = lists()
    scores = rerankers.build_model("initial", user_dim=3, item_dim=4)(batch)
    assert torch.equal(scores.argsort(dim=1, descending=True), batch.positions.argsort(dim=1))


def test_random_is_reproducible_under_the_seed_and_not_constant():
    model = rerankers.build_model("random", user_dim=3, item_dim=4)
    batch = lists()
    torch.manual_seed(3)
    a = model(batch)
    torch.manual_seed(3)
    assert torch.equal(a, model(batch))
    assert not torch.equal(a, model(batch))


def test_oracle_constructs_without_utilities_but_cannot_score():
    model = rerankers.build_model("oracle", user_dim=3, item_dim=4)
    assert sum(p.numel() for p in model.parameters()) == 0
    assert "utility_fn" not in rerankers.get_spec("oracle").options()
    with pytest.raises(RuntimeError, match="needs a utility_fn"):
        model(lists())


@pytest.mark.parametrize("name", ["random", "initial", "oracle"])
def test_baseline_cells_train_nothing(smoke_cell, name):
    record = cell_module.run_cell(smoke_cell(name, model_kwargs={}))
    assert record["status"] == "ok", record["error"]
    assert record["history"] == {} and "train_samples_per_s" not in record["measurements"]
    assert record["measurements"]["parameters"] == 0
    config = smoke_cell(name).workload
    test = generate(config, seed=0).test
    if name == "oracle":
        assert record["metrics"]["slate_acc"] == 1.0  # the ceiling
    elif name == "initial":  # right exactly when the first displayed item is the clicked one
        assert record["metrics"]["slate_acc"] == pytest.approx(test.clicks[:, 0].double().mean().item())
    else:
        assert abs(record["metrics"]["slate_acc"] - 1 / config.slate_length) < 0.1


def test_oracle_on_a_workload_without_utilities_fails_clearly(smoke_cell, monkeypatch):
    real_load = cell_module.load_workload
    monkeypatch.setattr(
        cell_module, "load_workload", lambda *a, **k: dataclasses.replace(real_load(*a, **k), value_model=None)
    )
    record = cell_module.run_cell(smoke_cell("oracle", model_kwargs={}))
    assert record["status"] == "failed" and "needs true utilities" in record["error"]


# --- models ----------------------------------------------------------------------------------


def test_prm_ablation_has_no_position_embedding():
    with_rank = rerankers.build_model("prm", user_dim=3, item_dim=4, d_model=8, dim_feedforward=8)
    without = rerankers.build_model(
        "prm", user_dim=3, item_dim=4, d_model=8, dim_feedforward=8, position_embedding=False
    )
    names = {n for n, _ in without.named_parameters()}
    assert not any(n.startswith("position") for n in names)
    assert any(n.startswith("position") for n, _ in with_rank.named_parameters())


def test_models_with_a_rank_embedding_say_undisplayed_scores_are_not_meaningful():
    """A per-rank embedding of a rank that is never displayed is never trained by its own item's loss."""
    for name in rerankers.model_names():
        model = rerankers.build_model(name, user_dim=3, item_dim=4)
        has_rank_embedding = any(isinstance(m, torch.nn.Embedding) for m in model.modules())
        assert rerankers.get_spec(name).scores_undisplayed_meaningfully is not has_rank_embedding, name
    assert not rerankers.get_spec("prm").scores_undisplayed_meaningfully


def test_prm_has_the_founding_transformers_depth():
    assert len(rerankers.build_model("prm", user_dim=3, item_dim=4).encoder.layers) == 2


def test_prm_scores_are_a_log_softmax_over_the_list():
    model = rerankers.build_model("prm", user_dim=3, item_dim=4, d_model=8, dim_feedforward=8).eval()
    batch = lists()
    torch.testing.assert_close(model(batch).exp().sum(dim=1), torch.ones(4))


def test_seq2slate_scores_the_decision_it_is_trained_on():
    """On lists whose best candidate is undisplayed, the displayed item it puts first in eval mode
    is the one its trained (train-mode) scores put first. Greedy decoding broke this: below its
    first pick, the order came from decoder states that training never reached."""
    torch.manual_seed(0)
    model = rerankers.build_model("seq2slate", user_dim=3, item_dim=4, d_model=8)
    with torch.no_grad():  # must hold for any weights: make the decoder's state weigh on the pointer
        for p in [*model.decoder.parameters(), *model.w_dec.parameters()]:
            p.mul_(10)
    batch = lists(rows=64, length=10, seed=2)
    displayed = batch.positions < 5
    trained, scored = model.train()(batch), model.eval()(batch)
    best_undisplayed = ~displayed.gather(1, trained.argmax(dim=1, keepdim=True)).squeeze(1)
    assert best_undisplayed.sum() >= 10

    def first_displayed(scores: torch.Tensor) -> torch.Tensor:
        return scores.masked_fill(~displayed, float("-inf")).argmax(dim=1)

    assert torch.equal(first_displayed(scored), first_displayed(trained))
    assert torch.equal(scored, trained)  # one decision, no dropout: the same scores in both modes


def test_dlcm_reads_the_raw_features_beside_their_expansion():
    """The authors concatenate the raw features to the ELU expansion: with the expansion silenced
    (all its weights 0, so ELU(0) = 0) the scores still follow the items' features."""
    torch.manual_seed(0)
    model = rerankers.build_model("dlcm", user_dim=3, item_dim=4, d_model=16).eval()
    assert model.gru.input_size == 16 and model.heads == 3
    with torch.no_grad():
        for p in model.expand.parameters():
            p.zero_()
    batch = lists()
    changed = SlateBatch(batch.user, batch.items + torch.randn_like(batch.items), batch.mask, batch.positions)
    assert not torch.allclose(model(batch), model(changed))


@pytest.mark.parametrize("group_size", [1, 2, 3])
def test_gsf_exact_groups_cover_every_real_item_equally(group_size):
    model = rerankers.build_model("gsf", user_dim=3, item_dim=4, group_size=group_size, d_model=8)
    groups = model._exact_groups(5, torch.device("cpu"))
    assert groups.shape == (torch.tensor(range(5 - group_size + 1, 6)).prod().item(), group_size)
    assert torch.equal(torch.bincount(groups.flatten(), minlength=5), torch.full((5,), groups.numel() // 5))


def test_gsf_samples_groups_beyond_max_groups():
    model = rerankers.build_model("gsf", user_dim=3, item_dim=4, group_size=3, max_groups=12, d_model=8)
    mask = torch.ones(3, 6, dtype=torch.bool)
    mask[0, 4:] = False
    mask[1, 1:] = False  # one real item: shorter than a group
    batch = lists(rows=3)
    batch = SlateBatch(batch.user, batch.items, mask, batch.positions)
    shuffles = 12 // 6
    for training in (True, False):
        torch.manual_seed(0)
        members, valid = model.train(training)._sampled_groups(batch)
        for row in range(3):
            counts = torch.bincount(members[row][valid[row]].flatten(), minlength=6)
            assert torch.equal(counts, 3 * shuffles * mask[row].long())  # g groups per shuffle per real item
    scores = model(batch)
    assert torch.isfinite(scores[mask]).all() and (scores[~mask] == float("-inf")).all()


def test_gsf_scorer_widths_halve_with_batch_norm():
    model = rerankers.build_model("gsf", user_dim=3, item_dim=4, d_model=128)
    linear = [model.user_in.out_features] + [m.out_features for m in model.net if isinstance(m, torch.nn.Linear)]
    assert linear == [256, 128, 64, 2]  # TF-Ranking's scorer, then one score per group member
    assert sum(isinstance(m, torch.nn.BatchNorm1d) for m in model.net) == 3


def test_gsf_sampled_groups_score_a_list_the_same_at_every_eval_call():
    """Eval groups are a hash of the items' features: the same list scores the same in any batch
    and any storage order (the founding sizes sample past L = 11 at g = 2)."""
    model = rerankers.build_model("gsf", user_dim=3, item_dim=4, d_model=8, max_groups=24).eval()
    batch = lists(rows=5, length=12, seed=4)
    assert math.perm(12, 2) > model.max_groups
    scores = model(batch)
    torch.testing.assert_close(model(batch[2:]), scores[2:])
    order = torch.randperm(12, generator=torch.Generator().manual_seed(1))
    permuted = SlateBatch(batch.user, batch.items[:, order], batch.mask, batch.positions)
    torch.testing.assert_close(model(permuted), scores[:, order])
    model.train()
    torch.manual_seed(0)
    first = model(batch)
    assert not torch.allclose(first, model(batch))  # training draws fresh groups at every call


def test_deepsets_rejects_an_unknown_pooling():
    with pytest.raises(ValueError, match="pooling must be one of"):
        rerankers.build_model("deepsets", user_dim=3, item_dim=4, pooling="sum")


# --- the whole zoo through the CLI -----------------------------------------------------------


def test_all_models_run_in_one_report(tmp_path):
    args = ["run", "--models", "all", "--profile", "smoke", "--executor", "inline", "--out", tmp_path]
    args += ["--run-id", "zoo", "--batches", "2", "--valid-slates", "64", "--test-slates", "128"]
    result = CliRunner().invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    records = {r["model"]: r for r in load_records(tmp_path / "zoo" / "records.jsonl")}
    assert sorted(records) == rerankers.model_names()
    assert all(r["status"] == "ok" for r in records.values())
    assert records["oracle"]["metrics"]["slate_acc"] == 1.0
    for name, record in records.items():
        meaningful = rerankers.get_spec(name).scores_undisplayed_meaningfully
        assert record["model_properties"] == {"scores_undisplayed_meaningfully": meaningful}
    report = (tmp_path / "zoo" / "report.md").read_text()
    assert all(f"| {name}" in report for name in records)
    assert "`oracle` is the accuracy ceiling" in report and "`random` is the floor" in report
