"""Each loss against a small case computed by hand or by an independent formula, plus the shared contract."""

import itertools
import math

import numpy as np
import pytest
import torch
from sklearn.metrics import ndcg_score

from bench import losses
from bench.losses import LOSSES, get_loss, register_loss

NAMES = sorted(LOSSES)
INF = float("inf")


def rows(seed: int, batch: int = 6, length: int = 5, graded: bool = False):
    g = torch.Generator().manual_seed(seed)
    scores = torch.randn(batch, length, generator=g, dtype=torch.float64)
    if graded:
        labels = torch.randint(0, 5, (batch, length), generator=g).double()
        labels[:, 0] = 3.0  # at least one relevant item per list
    else:
        labels = torch.nn.functional.one_hot(torch.randint(0, length, (batch,), generator=g), length).double()
    return scores, labels


def softmax(x):
    e = np.exp(x - x.max())
    return e / e.sum()


def dcg(gains_in_rank_order):
    return sum(g / math.log2(r + 2) for r, g in enumerate(gains_in_rank_order))


def test_every_issue_loss_is_registered():
    assert set(NAMES) == {"kl", "listnet", "listmle", "ranknet", "lambdaloss", "approxndcg", "neuralndcg", "bce"}


def test_duplicate_and_unknown_names():
    with pytest.raises(ValueError, match="already registered"):
        register_loss("kl")(lambda s, y, m=None: s.sum())
    with pytest.raises(losses.UnknownLossError) as info:
        get_loss("listnett")
    assert "did you mean 'listnet'" in str(info.value) and "ranknet" in str(info.value)


def test_kl_matches_torch_kldiv():
    scores, labels = rows(0)
    expected = torch.nn.KLDivLoss(reduction="batchmean")(torch.log_softmax(scores, 1), labels)
    assert get_loss("kl")(scores, labels).item() == pytest.approx(expected.item(), rel=1e-12)


def test_kl_graded_by_hand():
    scores = torch.tensor([[1.0, 0.0, -1.0]], dtype=torch.float64)
    labels = torch.tensor([[2.0, 1.0, 0.0]], dtype=torch.float64)
    p = np.array([2 / 3, 1 / 3, 0.0])
    q = softmax(np.array([1.0, 0.0, -1.0]))
    expected = sum(pi * math.log(pi / qi) for pi, qi in zip(p, q, strict=True) if pi > 0)
    assert get_loss("kl")(scores, labels).item() == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("graded", [False, True])
def test_listnet_is_cross_entropy_of_the_two_softmaxes(graded):
    scores, labels = rows(1, graded=graded)
    expected = np.mean(
        [-(softmax(y) * np.log(softmax(s))).sum() for s, y in zip(scores.numpy(), labels.numpy(), strict=True)]
    )
    assert get_loss("listnet")(scores, labels).item() == pytest.approx(expected, rel=1e-10)


def plackett_luce(scores, permutation):
    """Probability of drawing ``permutation`` (best first) from a Plackett-Luce model."""
    p, rest = 1.0, list(permutation)
    for item in permutation:
        p *= math.exp(scores[item]) / sum(math.exp(scores[j]) for j in rest)
        rest.remove(item)
    return p


def test_listmle_is_the_plackett_luce_likelihood_of_the_label_order():
    scores = [0.3, -1.2, 2.0, 0.7]
    labels = [1.0, 3.0, 0.0, 2.0]  # distinct: the label order is 1, 3, 0, 2
    probabilities = {pi: plackett_luce(scores, pi) for pi in itertools.permutations(range(4))}
    assert sum(probabilities.values()) == pytest.approx(1.0)  # the enumeration covers the distribution
    expected = -math.log(probabilities[(1, 3, 0, 2)])
    got = get_loss("listmle")(torch.tensor([scores], dtype=torch.float64), torch.tensor([labels], dtype=torch.float64))
    assert got.item() == pytest.approx(expected, rel=1e-10)


def test_listmle_with_ties_scores_one_order_consistent_with_the_labels():
    scores = [0.5, -0.3, 1.1, 0.0]
    labels = [0.0, 1.0, 0.0, 0.0]  # one click: item 1 first, the others in any order
    consistent = {-math.log(plackett_luce(scores, pi)) for pi in itertools.permutations(range(4)) if pi[0] == 1}
    seen = set()
    for seed in range(30):
        torch.manual_seed(seed)
        got = get_loss("listmle")(torch.tensor([scores], dtype=torch.float64), torch.tensor([labels])).item()
        match = min(consistent, key=lambda c: abs(c - got))
        assert got == pytest.approx(match, rel=1e-10)
        seen.add(round(match, 9))
    assert len(seen) > 1  # ties are broken at random


@pytest.mark.parametrize("graded", [False, True])
def test_ranknet_matches_a_double_loop(graded):
    scores, labels = rows(2, graded=graded)
    per_list = []
    for s, y in zip(scores.tolist(), labels.tolist(), strict=True):
        terms = [math.log1p(math.exp(-(s[i] - s[j]))) for i in range(len(s)) for j in range(len(s)) if y[i] > y[j]]
        per_list.append(sum(terms) / len(terms))
    assert get_loss("ranknet")(scores, labels).item() == pytest.approx(np.mean(per_list), rel=1e-10)


def ndcg_of_order(order, gains):
    ideal = dcg(sorted(gains, reverse=True))
    return dcg([gains[i] for i in order]) / ideal


@pytest.mark.parametrize("graded", [False, True])
def test_lambdaloss_weights_pairs_by_the_ndcg_change_of_swapping_them(graded):
    scores, labels = rows(3, graded=graded)
    per_list = []
    for s, y in zip(scores.tolist(), labels.tolist(), strict=True):
        order = sorted(range(len(s)), key=lambda i: -s[i])
        base = ndcg_of_order(order, y)
        total = 0.0
        for i in range(len(s)):
            for j in range(len(s)):
                if y[i] > y[j]:
                    swapped = list(order)
                    a, b = swapped.index(i), swapped.index(j)
                    swapped[a], swapped[b] = swapped[b], swapped[a]
                    delta = abs(ndcg_of_order(swapped, y) - base)
                    total += delta * math.log2(1 + math.exp(-(s[i] - s[j])))
        per_list.append(total)
    assert get_loss("lambdaloss")(scores, labels).item() == pytest.approx(np.mean(per_list), rel=1e-10)


@pytest.mark.parametrize("graded", [False, True])
def test_approxndcg_matches_its_formula(graded):
    scores, labels = rows(4, graded=graded)
    per_list = []
    for s, y in zip(scores.tolist(), labels.tolist(), strict=True):
        n = len(s)
        rank = [1 + sum(1 / (1 + math.exp(-(s[j] - s[i]))) for j in range(n) if j != i) for i in range(n)]
        approx = sum(y[i] / math.log2(1 + rank[i]) for i in range(n)) / dcg(sorted(y, reverse=True))
        per_list.append(-approx)
    assert get_loss("approxndcg")(scores, labels).item() == pytest.approx(np.mean(per_list), rel=1e-10)


def neuralndcg_by_loops(s, y, tau=1.0, iterations=30):
    n = len(s)
    p = np.zeros((n, n))
    for i in range(n):  # row i holds rank i + 1
        logits = [((n + 1 - 2 * (i + 1)) * s[j] - sum(abs(s[j] - s[k]) for k in range(n))) / tau for j in range(n)]
        p[i] = softmax(np.array(logits))
    for _ in range(iterations):
        p = p / p.sum(axis=1, keepdims=True)
        p = p / p.sum(axis=0, keepdims=True)
    sorted_gains = p @ np.array(y)
    return -dcg(sorted_gains) / dcg(sorted(y, reverse=True))


@pytest.mark.parametrize("graded", [False, True])
def test_neuralndcg_matches_a_loop_implementation(graded):
    scores, labels = rows(5, graded=graded)
    expected = np.mean([neuralndcg_by_loops(s, y) for s, y in zip(scores.tolist(), labels.tolist(), strict=True)])
    assert get_loss("neuralndcg")(scores, labels).item() == pytest.approx(expected, rel=1e-8)


@pytest.mark.parametrize("name", ["neuralndcg", "approxndcg"])
def test_smooth_ndcg_losses_approach_minus_ndcg_when_scores_are_far_apart(name):
    scores, labels = rows(6, graded=True)
    sharp = scores.argsort(dim=1).double() * 50.0  # same order, gaps of 50
    expected = ndcg_score(labels.numpy(), sharp.numpy())
    assert get_loss(name)(sharp, labels).item() == pytest.approx(-expected, abs=1e-6)


def test_bce_is_pointwise_binary_cross_entropy_on_relevance():
    scores, labels = rows(7, graded=True)
    target = (labels > 0).double()
    expected = torch.nn.functional.binary_cross_entropy_with_logits(scores, target)
    assert get_loss("bce")(scores, labels).item() == pytest.approx(expected.item(), rel=1e-12)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("graded", [False, True])
def test_padding_changes_nothing_and_gradients_stay_finite(name, graded):
    scores, labels = rows(8, graded=graded)
    if name == "listmle":  # its ties are broken at random, with draws that depend on the width
        labels = labels + torch.arange(5) * 0.01
    torch.manual_seed(0)
    plain = get_loss(name)(scores, labels)
    padded = torch.cat((scores, torch.full((6, 3), -INF, dtype=torch.float64)), dim=1).requires_grad_()
    padded_labels = torch.cat((labels, torch.zeros(6, 3, dtype=torch.float64)), dim=1)
    torch.manual_seed(0)
    loss = get_loss(name)(padded, padded_labels, padded > -INF)
    assert loss.item() == pytest.approx(plain.item(), rel=1e-9, abs=1e-12)
    loss.backward()
    assert torch.isfinite(padded.grad).all()
    assert (padded.grad[:, 5:] == 0).all()
    torch.manual_seed(0)  # mask=None: -inf marks the padding
    assert get_loss(name)(padded.detach(), padded_labels).item() == pytest.approx(plain.item(), rel=1e-9, abs=1e-12)


@pytest.mark.parametrize("name", NAMES)
def test_variable_lengths_equal_lists_scored_one_by_one(name):
    scores, labels = rows(9, batch=4, length=6, graded=True)
    labels = labels + torch.arange(6) * 0.01  # distinct, so listmle's random tie-breaking plays no part
    lengths = [6, 4, 3, 5]
    mask = torch.arange(6) < torch.tensor(lengths).unsqueeze(1)
    masked_scores = scores.masked_fill(~mask, -INF)
    # Lists weigh equally, so the batch loss is the mean of the lists' own losses.
    torch.manual_seed(1)
    whole = get_loss(name)(masked_scores, labels, mask).item()
    one_by_one = []
    for row, n in enumerate(lengths):
        torch.manual_seed(1)
        one_by_one.append(get_loss(name)(scores[row : row + 1, :n], labels[row : row + 1, :n]).item())
    assert whole == pytest.approx(np.mean(one_by_one), rel=1e-9)


@pytest.mark.parametrize("name", NAMES)
def test_lists_without_clicks(name):
    """A list with no label > 0 adds nothing to the listwise and pairwise losses; bce counts it."""
    scores = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    labels = torch.tensor([[0.0, 1, 0, 0], [0, 0, 0, 0], [0, 0, 1, 0]], dtype=torch.float64)
    torch.manual_seed(0)
    loss = get_loss(name)(scores, labels)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(scores.grad).all()
    if name != "bce":
        assert (scores.grad[1] == 0).all()
    if name not in ("bce", "listmle"):  # listmle breaks its ties with draws that depend on the shape
        torch.manual_seed(0)
        kept = get_loss(name)(scores[[0, 2]], labels[[0, 2]])
        assert loss.item() == pytest.approx(kept.item(), rel=1e-9)
    nothing = get_loss(name)(scores, torch.zeros(3, 4, dtype=torch.float64))
    assert torch.isfinite(nothing)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("graded", [False, True])
def test_agreeing_scores_cost_less_than_reversed_ones(name, graded):
    _, labels = rows(10, graded=graded)
    agreeing = labels * 3.0
    torch.manual_seed(0)
    good = get_loss(name)(agreeing, labels)
    torch.manual_seed(0)
    bad = get_loss(name)(-agreeing, labels)
    assert good.item() < bad.item()


@pytest.mark.parametrize("name", NAMES)
def test_float32_and_extreme_scores_stay_finite(name):
    scores = torch.tensor([[80.0, -80.0, 0.0, -INF], [1e4, 1e4, -1e4, 3.0]], requires_grad=True)
    labels = torch.tensor([[0.0, 2.0, 1.0, 0.0], [1.0, 0.0, 0.0, 0.0]])
    loss = get_loss(name)(scores, labels)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(scores.grad).all()


@pytest.mark.parametrize("name", NAMES)
def test_nan_scores_give_a_nan_loss(name):
    """A diverged model must show in the loss (the trainer turns it into status 'diverged')."""
    scores = torch.full((2, 4), float("nan"))
    labels = torch.tensor([[0.0, 1, 0, 0], [2, 0, 1, 0]])
    assert torch.isnan(get_loss(name)(scores, labels))
