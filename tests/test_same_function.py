"""Faster implementations keep the model's definition: the same parameters and the same function, up to float error,
as a straightforward implementation of it, on fixed inputs, in train and eval mode, with and without padding."""

import pytest
import torch

import rerankers
from rerankers import SlateBatch, mask_padding


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
