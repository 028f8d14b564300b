"""A model for benchmarks/gpu_accept.sh (loaded with RERANK_BENCH_PLUGINS=benchmarks.gpu_accept_models): a cell that
runs out of device memory for real, so that the acceptance script sees the record it gets and the good cell after
it."""

from __future__ import annotations

import torch

from rerankers import SlateBatch, mask_padding, register


@register("accept-oom")
class RunsOutOfMemory(torch.nn.Module):
    """On CUDA, asks the device for twice its memory in its first forward pass: a real out-of-memory error from
    CUDA's caching allocator. Elsewhere a plain linear scorer."""

    def __init__(self, user_dim: int, item_dim: int) -> None:
        super().__init__()
        self.score = torch.nn.Linear(item_dim, 1)

    def forward(self, batch: SlateBatch) -> torch.Tensor:
        device = batch.items.device
        if device.type == "cuda":
            too_much = 2 * torch.cuda.get_device_properties(device).total_memory
            torch.empty(too_much, dtype=torch.uint8, device=device)
        return mask_padding(self.score(batch.items).squeeze(-1), batch.mask)
