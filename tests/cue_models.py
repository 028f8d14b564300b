"""A model that fails on cue, for bench ab's test of a failing side; loaded only by the A/B's processes,
through RERANK_BENCH_PLUGINS=cue_models."""

import os

import torch

from rerankers import mask_padding, register


@register("test-fails-on-cue")
class FailsOnCue(torch.nn.Module):
    """Fails when the environment's FAIL_SIDE names its process's SIDE_MARK (a side of bench ab set with
    --b-env SIDE_MARK=b): the same side of the same A/B works until a later invocation sets FAIL_SIDE."""

    def __init__(self, user_dim, item_dim):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.ones(item_dim))

    def forward(self, batch):
        mark = os.environ.get("SIDE_MARK")
        if mark is not None and os.environ.get("FAIL_SIDE") == mark:
            raise RuntimeError(f"injected failure of side {mark}")
        return mask_padding(batch.items @ self.weight, batch.mask)
