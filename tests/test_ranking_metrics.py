"""Ranking metrics with graded and multi-click labels, padding, and the no-relevant convention."""

import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score, ndcg_score

from bench.cell import RANK_KS, evaluate
from bench.config import WorkloadConfig
from bench.data import SlateData, generate
from bench.metrics import (
    average_precision_at_k,
    judged,
    ndcg_at_k,
    precision_at_k,
    reciprocal_rank,
    regret,
    slate_hits,
    total_hits,
)
from rerankers import SlateBatch

INF = float("inf")


def random_lists(seed: int, n: int = 300, length: int = 8, variable: bool = False):
    g = torch.Generator().manual_seed(seed)
    scores = torch.randn(n, length, generator=g, dtype=torch.float64)
    labels = torch.randint(0, 5, (n, length), generator=g).double()
    labels[:, 0] = torch.randint(1, 5, (n,), generator=g).double()  # every list has a relevant item
    lengths = torch.randint(2, length + 1, (n,), generator=g) if variable else torch.full((n,), length)
    mask = torch.arange(length) < lengths.unsqueeze(1)
    return scores, labels * mask, mask, lengths


@pytest.mark.parametrize("k", RANK_KS)
@pytest.mark.parametrize("variable", [False, True])
def test_ndcg_matches_scikit_learn_with_graded_labels(k, variable):
    scores, labels, mask, lengths = random_lists(k, variable=variable)
    ours = ndcg_at_k(scores.masked_fill(~mask, -INF), labels, k, mask)
    for row in range(len(scores)):
        n = lengths[row].item()
        theirs = ndcg_score(labels[row : row + 1, :n].numpy(), scores[row : row + 1, :n].numpy(), k=k)
        assert ours[row].item() == pytest.approx(theirs, abs=1e-6)
    if not variable:  # the batch mean equals scikit-learn's mean over the rows
        assert ours.mean().item() == pytest.approx(ndcg_score(labels.numpy(), scores.numpy(), k=k), abs=1e-6)


@pytest.mark.parametrize("variable", [False, True])
def test_map_at_full_depth_matches_scikit_learn_average_precision(variable):
    scores, labels, mask, lengths = random_lists(11, variable=variable)
    ours = average_precision_at_k(scores, labels, 8, mask)
    for row in range(len(scores)):
        n = lengths[row].item()
        relevant = (labels[row, :n] > 0).numpy()
        theirs = average_precision_score(relevant, scores[row, :n].numpy())
        assert ours[row].item() == pytest.approx(theirs, abs=1e-6)


def test_map_precision_mrr_by_hand():
    # Model order: items 0..4 (scores descending); relevant at ranks 1 and 3 (labels 2 and 1).
    scores = torch.tensor([[5.0, 4.0, 3.0, 2.0, 1.0]])
    labels = torch.tensor([[2.0, 0.0, 1.0, 0.0, 0.0]])
    assert average_precision_at_k(scores, labels, 1).item() == pytest.approx(1.0)  # 1 / min(2, 1)
    assert average_precision_at_k(scores, labels, 2).item() == pytest.approx(0.5)  # 1 / min(2, 2)
    assert average_precision_at_k(scores, labels, 3).item() == pytest.approx((1 + 2 / 3) / 2)
    assert average_precision_at_k(scores, labels, 5).item() == pytest.approx((1 + 2 / 3) / 2)
    assert precision_at_k(scores, labels, 1).item() == 1.0
    assert precision_at_k(scores, labels, 3).item() == pytest.approx(2 / 3)
    assert precision_at_k(scores, labels, 5).item() == pytest.approx(2 / 5)
    assert reciprocal_rank(scores, labels).item() == 1.0
    # Reversed order: the relevant items sit at ranks 3 and 5.
    reverse = -scores
    assert reciprocal_rank(reverse, labels).item() == pytest.approx(1 / 3)
    assert average_precision_at_k(reverse, labels, 5).item() == pytest.approx((1 / 3 + 2 / 5) / 2)


def test_precision_denominator_is_capped_by_the_slate_length():
    scores = torch.tensor([[2.0, 1.0, -INF, -INF]])
    labels = torch.tensor([[1.0, 1.0, 0.0, 0.0]])
    assert precision_at_k(scores, labels, 3).item() == 1.0  # 2 relevant of 2 displayed items
    assert average_precision_at_k(scores, labels, 3).item() == 1.0


def test_no_relevant_item_scores_zero_everywhere():
    scores = torch.tensor([[0.3, 0.1, 0.2]])
    nothing = torch.zeros(1, 3)
    assert not judged(nothing).item()
    for value in (
        ndcg_at_k(scores, nothing, 3),
        average_precision_at_k(scores, nothing, 3),
        precision_at_k(scores, nothing, 3),
        reciprocal_rank(scores, nothing),
    ):
        assert value.item() == 0.0
    assert not slate_hits(scores, nothing).item()


def test_slate_hits_with_graded_and_multi_click_labels():
    scores = torch.tensor([[0.9, 0.1, 0.5], [0.9, 0.1, 0.5], [0.1, 0.9, 0.5]])
    labels = torch.tensor([[1.0, 0.0, 1.0], [1.0, 3.0, 0.0], [2.0, 2.0, 0.0]])
    # row 0: top item is one of two clicks; row 1: top has grade 1 but grade 3 exists; row 2: tie at the top grade
    assert slate_hits(scores, labels).tolist() == [True, False, True]


def test_one_hot_hits_equal_the_founding_definition():
    g = torch.Generator().manual_seed(0)
    scores = torch.randn(500, 5, generator=g)
    clicks = torch.nn.functional.one_hot(torch.randint(0, 5, (500,), generator=g), 5).float()
    assert torch.equal(slate_hits(scores, clicks), scores.argmax(1) == clicks.argmax(1))


def test_total_hits_with_padding_and_graded_labels():
    scores = torch.tensor([[0.1, 0.0, 0.9, 0.5, -INF], [0.0, 0.2, 0.3, 0.1, 0.0]])
    slate = torch.tensor([[2, 0, 4], [1, 3, 0]])
    slate_mask = torch.tensor([[True, True, False], [True, True, True]])
    labels = torch.tensor([[2.0, 1.0, 0.0], [0.0, 1.0, 1.0]])
    # row 0: top candidate 2 is displayed with the top grade; row 1: top candidate 2 was not displayed
    assert total_hits(scores, slate, labels, slate_mask).tolist() == [True, False]


def test_regret_by_hand_and_padding():
    scores = torch.tensor([[0.2, 0.9, 0.1, 5.0]])
    utility = torch.tensor([[3.0, 1.0, 2.0, 99.0]])
    mask = torch.tensor([[True, True, True, False]])
    assert regret(scores, utility, mask).item() == pytest.approx(2.0)  # best 3.0, model's top has 1.0
    assert regret(torch.tensor([[1.0, 0.0, 0.5, -INF]]), utility, mask).item() == 0.0


def test_evaluate_judges_only_slates_with_a_relevant_item():
    n, S, T = 4, 4, 3
    inputs = SlateBatch(
        user=torch.zeros(n, 1),
        items=torch.zeros(n, S, 2),
        mask=torch.ones(n, S, dtype=torch.bool),
        positions=torch.arange(S).expand(n, S),
    )
    slate = torch.arange(T).expand(n, T)
    labels = torch.tensor([[1.0, 0, 0], [0, 0, 0], [0, 1.0, 0], [0, 0, 0]])
    utility = torch.tensor([[3.0, 1, 2, 0], [1, 2, 3, 0], [1, 3, 2, 0], [2, 1, 3, 0]])
    data = SlateData(inputs, slate, labels, utility)
    scores = torch.tensor([[3.0, 2, 1, 0]]).expand(n, S)  # always ranks item 0 first
    metrics, per_slate = evaluate(scores, data)
    assert metrics["judged_slates"] == 2 and metrics["test_slates"] == 4
    assert per_slate["slate_hits"].tolist() == [True, False]
    assert metrics["slate_acc"] == 0.5 and metrics["mrr"] == pytest.approx((1 + 1 / 2) / 2)
    assert metrics["regret"] == pytest.approx((0 + 2 + 2 + 1) / 4)  # over every slate
    ks = [k for k in RANK_KS if k <= T]  # k beyond the slate length repeats the slate-length value
    names = {f"{m}@{k}" for m in ("ndcg", "label_ndcg", "map", "precision") for k in ks}
    assert names <= set(metrics) and "ndcg@5" not in metrics
    real = evaluate(scores, data, synthetic=False)[0]
    assert "label_ndcg@3" not in real and real["ndcg@3"] == metrics["label_ndcg@3"]


def test_metrics_ignore_what_padding_scores():
    scores, labels, mask, _ = random_lists(3, n=50, variable=True)
    garbage = scores.masked_fill(~mask, 100.0)  # a model that forgot to mask
    for fn in (ndcg_at_k, average_precision_at_k, precision_at_k):
        assert torch.equal(fn(garbage, labels, 3, mask), fn(scores.masked_fill(~mask, -INF), labels, 3, mask))
    assert torch.equal(slate_hits(garbage, labels, mask), slate_hits(scores, labels, mask))
    np.testing.assert_array_equal(reciprocal_rank(garbage, labels, mask), reciprocal_rank(scores, labels, mask))


def test_one_tie_rule_for_every_metric():
    # Two items scored alike: the one displayed first ranks first, for MRR as for every other metric.
    scores, labels = torch.tensor([[1.0, 1.0]]), torch.tensor([[0.0, 1.0]])
    assert reciprocal_rank(scores, labels).item() == 0.5  # trec_eval's 0.5, not 1.0
    assert ndcg_at_k(scores, labels, 1).item() == 0.0
    assert precision_at_k(scores, labels, 1).item() == 0.0
    assert average_precision_at_k(scores, labels, 1).item() == 0.0
    assert not slate_hits(scores, labels).item()


def test_a_constant_scorer_is_judged_as_the_displayed_order():
    _, labels, mask, _ = random_lists(5)
    labels = labels.roll(shifts=3, dims=1)  # the relevant item random_lists puts first moves down the slate
    constant = torch.zeros_like(labels)
    first_relevant = (labels > 0).to(torch.int8).argmax(dim=1) + 1
    np.testing.assert_allclose(reciprocal_rank(constant, labels, mask), 1.0 / first_relevant.double())
    top_is_best = labels[:, 0] == labels.amax(dim=1)
    assert torch.equal(slate_hits(constant, labels, mask), top_is_best)


def test_a_perfect_ranker_scores_ndcg_one_with_one_item_slates():
    """Slates without any gain to earn (one item, or equal utilities) leave the utility-NDCG mean."""
    config = WorkloadConfig(batch_size=64, batches=2, candidates=8, slate_length=5, slate_min=1, test_slates=4000)
    data = generate(config, seed=1).test
    assert (data.slate_mask.sum(dim=1) == 1).any()  # the case that scored 0.805 before
    metrics, _ = evaluate(data.utility, data)  # the oracle: the true utilities as scores
    for k in (1, 3, 5):
        assert metrics[f"ndcg@{k}"] == pytest.approx(1.0)
