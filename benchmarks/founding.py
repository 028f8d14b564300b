"""The founding experiment's logic as its blog code runs it, kept as a baseline.

A re-expression (not a copy) of the blog's script with its crashes fixed (np.long,
the global sequence length) and its sizes made parameters. Its slow parts are kept
on purpose, because the benchmark suite and the faithfulness check compare against
them: numpy generation with per-row Python loops, a sequence-first
nn.TransformerEncoder wrapped in transposes, a test batch that is the first training
batch (skipped in epoch 0 only, as the blog does).

    python benchmarks/founding.py --seed 0 --d-model 64 --batch-size 512 --batches 100 --epochs 6
"""

from __future__ import annotations

import argparse
import json
from itertools import pairwise

import numpy as np
import torch
from torch import nn

from bench.config import PROFILES


class _SwapBatchAndSequence(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.transpose(0, 1)


def founding_transformer(input_dim: int, d_model: int, dim_feedforward: int) -> nn.Module:
    layer = nn.TransformerEncoderLayer(d_model, 2, dim_feedforward, 0.1, "relu")
    return nn.Sequential(
        nn.Linear(input_dim, d_model),
        nn.ReLU(),
        _SwapBatchAndSequence(),
        nn.TransformerEncoder(layer, 2, nn.LayerNorm(d_model), enable_nested_tensor=False),
        _SwapBatchAndSequence(),
        nn.ReLU(),
        nn.Linear(d_model, 1),
    )


def founding_mlp(input_dim: int, d_model: int, dim_feedforward: int) -> nn.Module:
    """Three hidden layers of width ``d_model`` with ReLU, then one score per item."""
    del dim_feedforward
    widths = [input_dim, d_model, d_model, d_model]
    hidden = [layer for i, o in pairwise(widths) for layer in (nn.Linear(i, o), nn.ReLU())]
    return nn.Sequential(*hidden, nn.Linear(d_model, 1))


class FoundingGenerator:
    """Per-batch numpy generation with per-row loops, as in the blog."""

    def __init__(
        self,
        user_dim: int,
        item_dim: int,
        candidates: int,
        slate_length: int,
        value_weights: tuple[torch.Tensor, torch.Tensor] | None = None,
    ):
        self.user_dim, self.item_dim = user_dim, item_dim
        self.candidates, self.slate_length = candidates, slate_length
        self.value_layer = nn.Linear(user_dim + 3 * item_dim, item_dim)
        nn.init.xavier_uniform_(self.value_layer.weight)
        self.value_layer.requires_grad_(False)
        if value_weights is not None:  # to compare implementations in the same hidden world
            self.value_layer.weight.copy_(value_weights[0])
            self.value_layer.bias.copy_(value_weights[1])

    def batch(self, batch_size: int) -> dict[str, torch.Tensor]:
        S, T = self.candidates, self.slate_length
        user = np.random.randn(batch_size, self.user_dim).astype(np.float32)
        features = np.random.randn(batch_size, S, self.item_dim).astype(np.float32)
        features[:, :, -1] = features[:, :, :-1].sum(axis=-1)
        src = np.zeros((batch_size, S, self.item_dim), dtype=np.float32)
        for row in range(batch_size):
            src[row] = features[row][np.arange(S)]
        shown = np.zeros((batch_size, T), dtype=np.int64)
        for row in range(batch_size):
            shown[row] = np.random.permutation(np.arange(S))[:T]
        shown_features = np.zeros((batch_size, T, self.item_dim), dtype=np.float32)
        for row in range(batch_size):
            shown_features[row] = features[row][shown[row]]
        with torch.no_grad():
            src_t = torch.from_numpy(src)
            summary = torch.cat((torch.from_numpy(user), src_t.mean(1), src_t.std(1), src_t.max(1).values), 1)
            coef = self.value_layer(summary).unsqueeze(2)
            value = torch.bmm(torch.from_numpy(shown_features), coef).squeeze(2)
            clicks = (value == value.max(dim=1, keepdim=True).values).float()
        return {"user": torch.from_numpy(user), "src": src_t, "shown": torch.from_numpy(shown), "clicks": clicks}


def _scores(model: nn.Module, batch: dict[str, torch.Tensor], whole_list: bool = False) -> torch.Tensor:
    n, S, _ = batch["src"].shape
    user = batch["user"].repeat(1, S).reshape(n, S, -1)
    out = model(torch.cat((user, batch["src"]), dim=2)).squeeze(-1)
    if whole_list:
        return out
    rows = torch.arange(n).repeat_interleave(batch["shown"].shape[1])
    return out[rows, batch["shown"].flatten()].reshape(n, -1)


@torch.no_grad()
def _slate_acc(model: nn.Module, batch: dict[str, torch.Tensor]) -> float:
    model.eval()
    acc = (_scores(model, batch).argmax(1) == batch["clicks"].argmax(1)).float().mean().item()
    model.train()
    return acc


def run(
    model_name: str,
    seed: int,
    batch_size: int,
    batches: int,
    epochs: int,
    d_model: int,
    dim_feedforward: int,
    candidates: int = 10,
    slate_length: int = 5,
    user_dim: int = 7,
    item_dim: int = 10,
    heldout_batches: int = 4,
    value_weights: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> dict[str, float]:
    np.random.seed(seed)
    torch.manual_seed(seed)
    gen = FoundingGenerator(user_dim, item_dim, candidates, slate_length, value_weights)
    dataset = [gen.batch(batch_size) for _ in range(batches)]
    heldout = [gen.batch(batch_size) for _ in range(heldout_batches)]
    build = {"transformer": founding_transformer, "mlp": founding_mlp}[model_name]
    model = build(user_dim + item_dim, d_model, dim_feedforward)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.001, amsgrad=True)
    kl = nn.KLDivLoss(reduction="batchmean")
    for epoch in range(epochs):
        for i, batch in enumerate(dataset):
            if epoch == 0 and i == 0:
                continue  # the blog's test batch, trained on from epoch 1 on
            loss = kl(torch.log_softmax(_scores(model, batch), dim=1), batch["clicks"])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return {
        "blog_test_batch_slate_acc": _slate_acc(model, dataset[0]),
        "heldout_slate_acc": float(np.mean([_slate_acc(model, b) for b in heldout])),
    }


def add_size_arguments(parser: argparse.ArgumentParser) -> None:
    """--batch-size, --batches, --epochs, --d-model and --dim-feedforward, defaulting to the default profile's."""
    profile = PROFILES["default"]
    workload, train, options = profile["workload"], profile["train"], profile["model_kwargs"]
    parser.add_argument("--batch-size", type=int, default=workload.batch_size)
    parser.add_argument("--batches", type=int, default=workload.batches)
    parser.add_argument("--epochs", type=int, default=train.epochs)
    parser.add_argument("--d-model", type=int, default=options["d_model"])
    parser.add_argument("--dim-feedforward", type=int, default=options["dim_feedforward"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=["transformer", "mlp"], default="transformer")
    parser.add_argument("--seed", type=int, default=0)
    add_size_arguments(parser)
    args = parser.parse_args()
    result = run(
        args.model,
        args.seed,
        args.batch_size,
        args.batches,
        args.epochs,
        args.d_model,
        args.dim_feedforward,
    )
    print(json.dumps({"model": args.model, "seed": args.seed, **result}))


if __name__ == "__main__":
    main()
