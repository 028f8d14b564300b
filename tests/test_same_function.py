"""Faster implementations keep the model's definition: the same parameters and the same function, up to float error,
as a straightforward implementation of it, on fixed inputs, in train and eval mode, with and without padding."""

import copy

import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

import rerankers
from rerankers import SlateBatch, mask_padding, reading_order, user_item_features
from rerankers.attention import _SAFE_SOFTMAX, use_attention


def fixed_lists(rows: int, length: int, padded: bool, seed: int = 0) -> SlateBatch:
    g = torch.Generator().manual_seed(seed)
    mask = torch.ones(rows, length, dtype=torch.bool)
    if padded:
        mask[0, length - 2 :] = False
        mask[1, 1:] = False  # one real item
    return SlateBatch(
        user=torch.randn(rows, 3, generator=g),
        items=torch.randn(rows, length, 4, generator=g),
        mask=mask,
        positions=torch.stack([torch.randperm(length, generator=g) for _ in range(rows)]),
    )


def gsf_reference(model, batch: SlateBatch) -> torch.Tensor:
    """GSF as its docstring defines it, written plainly: every group's first-layer sum gathered per slot with a
    full index, only the valid groups through the net, an item's score the mean over its valid groups."""
    rows, length = batch.mask.shape
    g = model.group_size
    if len(model._exact_groups(length, batch.items.device)) <= model.max_groups:
        members = model._exact_groups(length, batch.items.device).unsqueeze(0).expand(rows, -1, -1)
        valid = batch.mask.gather(1, members.reshape(rows, -1)).view(rows, -1, g).all(dim=-1)
    else:
        members, valid = model._sampled_groups(batch)
    groups = members.shape[1]
    per_slot = model.item_in(batch.items).view(rows, length, g, model.width)
    hidden = model.user_in(batch.user).unsqueeze(1)
    for slot in range(g):
        index = members[:, :, slot].unsqueeze(-1).expand(-1, -1, model.width)
        hidden = hidden + per_slot[:, :, slot].gather(1, index)
    outputs = hidden.new_zeros(rows, groups, g)
    if valid.any():
        outputs[valid] = model.net(hidden[valid])
    flat = members.reshape(rows, groups * g)
    weight = valid.unsqueeze(-1).expand(-1, -1, g).reshape(rows, -1)
    totals = torch.zeros(rows, length).scatter_add(1, flat, outputs.reshape(rows, -1))
    counts = torch.zeros_like(totals).scatter_add(1, flat, weight.float())
    return mask_padding(totals / counts.clamp_min(1.0), batch.mask)


def scores_and_grads(model, forward, batch: SlateBatch, seed: int) -> tuple[torch.Tensor, list[torch.Tensor]]:
    model.zero_grad(set_to_none=True)
    torch.manual_seed(seed)  # the same sampled groups (training) for both
    scores = forward(batch)
    if model.training:
        scores.masked_fill(~batch.mask, 0).pow(2).sum().backward()
    return scores.detach(), [p.grad.clone() for p in model.parameters() if p.grad is not None]


@pytest.mark.parametrize("length, group_size", [(6, 2), (5, 3), (12, 2)])  # exact, exact, sampled groups
@pytest.mark.parametrize("padded", [False, True])
@pytest.mark.parametrize("training", [True, False])
def test_gsf_is_its_plain_definition(length, group_size, padded, training):
    torch.manual_seed(0)
    model = rerankers.build_model("gsf", user_dim=3, item_dim=4, d_model=8, group_size=group_size, max_groups=40)
    model.train(training)
    batch = fixed_lists(5, length, padded)
    fast, fast_grads = scores_and_grads(model, model, batch, seed=1)
    plain, plain_grads = scores_and_grads(model, lambda b: gsf_reference(model, b), batch, seed=1)
    torch.testing.assert_close(fast, plain)
    assert len(fast_grads) == len(plain_grads) == (len(list(model.parameters())) if training else 0)
    for a, b in zip(fast_grads, plain_grads, strict=True):
        torch.testing.assert_close(a, b)


def seq2slate_reference(model, batch: SlateBatch) -> torch.Tensor:
    """Seq2Slate as its docstring defines it, written plainly: the encoder LSTM over each list's real items packed
    (lengths on the host), then the first pointer step."""
    rows = batch.mask.shape[0]
    embedded = model.embed(user_item_features(batch))
    order = reading_order(batch).unsqueeze(-1).expand(-1, -1, model.d_model)
    lengths = batch.mask.sum(dim=1).clamp_min(1).cpu()
    packed = pack_padded_sequence(embedded.gather(1, order), lengths, batch_first=True, enforce_sorted=False)
    outputs, (h, c) = model.encoder(packed)
    outputs, _ = pad_packed_sequence(outputs, batch_first=True, total_length=embedded.shape[1])
    encoded = torch.zeros_like(outputs).scatter_(1, order, outputs)
    hidden, _ = model.decoder(model.go.expand(rows, -1), (h[0], c[0]))
    pointer = model.v(torch.tanh(model.w_enc(encoded) + model.w_dec(hidden).unsqueeze(1))).squeeze(-1)
    return mask_padding(pointer, batch.mask)


@pytest.mark.parametrize("padded", [False, True])
def test_seq2slate_is_its_plain_definition(padded):
    torch.manual_seed(0)
    model = rerankers.build_model("seq2slate", user_dim=3, item_dim=4, d_model=8).train()
    batch = fixed_lists(5, 6, padded)
    if padded:
        batch.mask[2] = False  # a list without a real item reads one slot, as a packed sequence of length 1
    fast, fast_grads = scores_and_grads(model, model, batch, seed=1)
    plain, plain_grads = scores_and_grads(model, lambda b: seq2slate_reference(model, b), batch, seed=1)
    torch.testing.assert_close(fast, plain)
    assert len(fast_grads) == len(plain_grads) == len(list(model.parameters()))
    for a, b in zip(fast_grads, plain_grads, strict=True):
        torch.testing.assert_close(a, b)


def attention_pair(dropout: float, seed: int = 0):
    torch.manual_seed(seed)
    plain = torch.nn.MultiheadAttention(8, 2, dropout=dropout, batch_first=True)
    fast = copy.deepcopy(plain)
    assert use_attention(fast, "torch") == 1 and type(fast).__name__ == "Attention"
    assert fast.state_dict().keys() == plain.state_dict().keys()
    return plain, fast


@pytest.mark.parametrize("mask_kind", [None, "bool", "float"])
@pytest.mark.parametrize("self_attention", [True, False])
@pytest.mark.parametrize("dropout", [0.0, 0.2])
def test_attention_is_multihead_attention(mask_kind, self_attention, dropout):
    """Training forward and backward equal to nn.MultiheadAttention's, a list of only padding included (0 out);
    with torch's dropout for the weights, the same masks (the same draws in the same order)."""
    plain, fast = attention_pair(dropout)
    g = torch.Generator().manual_seed(1)
    query = torch.randn(4, 5, 8, generator=g)
    keys = query if self_attention else torch.randn(4, 3, 8, generator=g)
    padding = torch.zeros(4, keys.shape[1], dtype=torch.bool)
    padding[1], padding[2, 1:] = True, True
    mask = {None: None, "bool": padding, "float": torch.zeros(padding.shape).masked_fill(padding, float("-inf"))}
    path = fast._batch_first_path(query, keys, keys, mask[mask_kind], False, None, False)
    assert path == (_SAFE_SOFTMAX is not None)  # the batch-first path is what is compared, where torch has it
    outputs, grads = [], []
    for module in (plain, fast):
        q = query.clone().requires_grad_()
        k = q if self_attention else keys.clone().requires_grad_()
        torch.manual_seed(2)
        out, weights = module(q, k, k, key_padding_mask=mask[mask_kind], need_weights=False)
        out.pow(2).sum().backward()
        assert weights is None
        outputs.append(out.detach())
        grads.append([q.grad, *(p.grad for p in module.parameters())])
    torch.testing.assert_close(outputs[1], outputs[0])
    for a, b in zip(grads[1], grads[0], strict=True):
        torch.testing.assert_close(a, b)


def test_attention_keeps_torch_forward_where_its_path_does_not_apply():
    plain, fast = attention_pair(0.1)
    x = torch.randn(2, 4, 8)
    plain.eval(), fast.eval()
    torch.testing.assert_close(fast(x, x, x)[0], plain(x, x, x)[0])  # eval, weights returned
    assert fast(x, x, x)[1] is not None
    fast.train()
    torch.manual_seed(0)
    with_weights = fast(x, x, x, need_weights=True)
    assert with_weights[1] is not None  # the plain forward: weights asked for
