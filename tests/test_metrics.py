import numpy as np
import pytest
import torch
from sklearn.metrics import ndcg_score

from bench.losses import kl_divergence
from bench.metrics import ndcg_at_k, reciprocal_rank, slate_hits, total_hits, utility_gains


def test_slate_and_total_hits_by_hand():
    # candidate scores for 2 users, 4 candidates; slate shows candidates [2, 0] and [1, 3]
    scores = torch.tensor([[0.1, 0.0, 0.9, 0.5], [0.0, 0.2, 0.3, 0.1]])
    slate = torch.tensor([[2, 0], [1, 3]])
    clicks = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    on_slate = scores.gather(1, slate)
    assert slate_hits(on_slate, clicks).tolist() == [True, False]
    # user 0: top candidate 2 was clicked; user 1: top candidate 2 was not displayed
    assert total_hits(scores, slate, clicks).tolist() == [True, False]


def test_reciprocal_rank_by_hand():
    scores = torch.tensor([[0.3, 0.9, 0.1], [0.5, 0.4, 0.6], [2.0, 1.0, 0.0]])
    clicks = torch.tensor([[1.0, 0, 0], [0, 1.0, 0], [1.0, 0, 0]])
    assert reciprocal_rank(scores, clicks).tolist() == pytest.approx([1 / 2, 1 / 3, 1.0])


def test_ndcg_by_hand():
    scores = torch.tensor([[3.0, 2.0, 1.0]])
    gains = torch.tensor([[0.0, 1.0, 2.0]])
    # order by score: gains 0, 1, 2 -> DCG = 0 + 1/log2(3) + 2/log2(4); ideal 2 + 1/log2(3)
    expected = (1 / np.log2(3) + 1.0) / (2 + 1 / np.log2(3))
    assert ndcg_at_k(scores, gains, 3).item() == pytest.approx(expected, abs=1e-12)
    assert ndcg_at_k(scores, gains, 1).item() == 0.0


def test_ndcg_no_gain_is_zero():
    assert ndcg_at_k(torch.tensor([[1.0, 2.0]]), torch.zeros(1, 2), 2).item() == 0.0


@pytest.mark.parametrize("k", [1, 2, 3, 5, 8])
def test_ndcg_matches_scikit_learn(k):
    g = torch.Generator().manual_seed(k)
    scores = torch.randn(200, 8, generator=g, dtype=torch.float64)
    utility = torch.randn(200, 8, generator=g, dtype=torch.float64)
    gains = utility_gains(utility)
    ours = ndcg_at_k(scores, gains, k).mean().item()
    theirs = ndcg_score(gains.numpy(), scores.numpy(), k=k)
    assert ours == pytest.approx(theirs, abs=1e-6)


def test_padded_items_are_ignored_by_ndcg():
    scores = torch.tensor([[float("-inf"), 1.0, 2.0]])
    gains = torch.tensor([[0.0, 2.0, 0.0]])
    # the gain-2 item ranks second behind a gain-0 one: DCG 2/log2(3), ideal 2
    assert ndcg_at_k(scores, gains, 2).item() == pytest.approx(1 / np.log2(3))


def test_kl_matches_torch_kldiv_and_handles_padding():
    g = torch.Generator().manual_seed(0)
    scores = torch.randn(16, 5, generator=g)
    target = torch.nn.functional.one_hot(torch.randint(0, 5, (16,), generator=g), 5).float()
    expected = torch.nn.KLDivLoss(reduction="batchmean")(torch.log_softmax(scores, 1), target)
    assert kl_divergence(scores, target).item() == pytest.approx(expected.item(), rel=1e-6)
    padded = torch.cat((scores, torch.full((16, 2), float("-inf"))), dim=1).requires_grad_()
    loss = kl_divergence(padded, torch.cat((target, torch.zeros(16, 2)), dim=1))
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    loss.backward()
    assert torch.isfinite(padded.grad).all()


def test_utility_gains_start_from_the_lowest_real_item_whatever_a_padded_one_holds():
    """With variable slate lengths (--slate-min) a padded slot may hold any utility: the gains of the real items are
    those of the slate without it, and a padded slot gains nothing."""
    utility = torch.tensor([[1.0, 3.0, -100.0, 50.0], [2.0, 0.5, 4.0, -7.0]], dtype=torch.float64)
    mask = torch.tensor([[True, True, False, False], [True, True, True, False]])
    gains = utility_gains(utility, mask)
    assert gains.tolist() == [[0.0, 2.0, 0.0, 0.0], [1.5, 0.0, 3.5, 0.0]]
    assert torch.equal(gains[:1, :2], utility_gains(utility[:1, :2]))
    # a scorer that puts the lowest real item first earns nothing at ndcg@1
    scores = torch.tensor([[9.0, 1.0, 5.0, 7.0], [1.0, 9.0, 2.0, 8.0]])
    assert ndcg_at_k(scores, gains, 1, mask).tolist() == [0.0, 0.0]
