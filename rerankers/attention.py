"""Multi-head attention computed batch-first in training, with the harness's dropout for the attention weights.

``nn.MultiheadAttention`` with ``batch_first=True`` transposes its inputs to sequence-first, projects them, copies
q, k and v into head-major layouts, calls ``scaled_dot_product_attention`` (its math path in training, the only
one that takes dropout on CPU, where the attention-weight mask comes from torch's Bernoulli) and transposes the
output back. With lists of ~10 items, those layout copies and transposes (forward and backward) cost about as much
as the attention's own products. ``Attention`` is the same module (same parameters, same state, same function up
to float error) that computes the training forward pass in the batch-first layout: one packed projection viewed
as q, k and v, ``softmax(q k^T / sqrt(d) + mask) v`` per head, then the output projection. Its attention-weight
dropout draws its mask as the model's dropout modules do (``rerankers.dropout``), so that one setting covers
every dropout of a model. Whatever this path does not cover (attention masks other than key padding, returned
weights, separate key/value sizes, bias_k/bias_v, zero attention, nested tensors, eval mode and no-grad forward
passes, where torch's own fused kernels serve) is ``nn.MultiheadAttention``'s own forward.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from rerankers.dropout import bulk_dropout, resolved_cpu_dropout, takes_bits

_SAFE_SOFTMAX = getattr(torch.ops.aten, "_safe_softmax", None)  # 0 for a row of only masked keys (torch >= 2.5)


class Attention(nn.MultiheadAttention):
    """``nn.MultiheadAttention`` whose training forward runs batch-first; ``bulk_weights`` draws the attention
    weights' dropout mask from bulk random bits (fp32 CPU), as ``rerankers.dropout.Dropout`` does."""

    bulk_weights: bool = False

    def forward(  # type: ignore[override]
        self,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        key_padding_mask: torch.Tensor | None = None,
        need_weights: bool = True,
        attn_mask: torch.Tensor | None = None,
        average_attn_weights: bool = True,
        is_causal: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        if not self._batch_first_path(query, key, value, key_padding_mask, need_weights, attn_mask, is_causal):
            return super().forward(
                query, key, value, key_padding_mask, need_weights, attn_mask, average_attn_weights, is_causal
            )
        return self._attend(query, key, value, key_padding_mask), None

    def _batch_first_path(self, query, key, value, key_padding_mask, need_weights, attn_mask, is_causal) -> bool:
        """Whether this forward is one ``_attend`` computes: a training forward with gradients, batch-first
        dense inputs of one width, at most a key padding mask, no weights returned."""
        module = self.batch_first and self._qkv_same_embed_dim and self.in_proj_bias is not None
        module = module and self.bias_k is None and not self.add_zero_attn and _SAFE_SOFTMAX is not None
        call = not need_weights and attn_mask is None and not is_causal and self.training and torch.is_grad_enabled()
        inputs = query.dim() == 3 and not (query.is_nested or key.is_nested or value.is_nested)
        padding = key_padding_mask is None or key_padding_mask.dtype in (torch.bool, query.dtype)
        return module and call and inputs and padding

    def _attend(self, query, key, value, key_padding_mask) -> torch.Tensor:
        rows, length, width = query.shape
        heads = self.num_heads
        head_dim = width // heads
        if query is key and key is value:  # self-attention: one packed projection
            packed = F.linear(query, self.in_proj_weight, self.in_proj_bias).view(rows, length, 3, heads, head_dim)
            q, k, v = packed.permute(2, 0, 3, 1, 4).unbind(0)  # [B, H, L, d] each, views
        else:
            weights, biases = self.in_proj_weight.chunk(3), self.in_proj_bias.chunk(3)
            q, k, v = (
                F.linear(x, w, b).view(rows, x.shape[1], heads, head_dim).transpose(1, 2)
                for x, w, b in zip((query, key, value), weights, biases, strict=True)
            )
        scores = (q * (1.0 / math.sqrt(head_dim))) @ k.transpose(-2, -1)  # [B, H, L, S]
        if key_padding_mask is not None and key_padding_mask.dtype == torch.bool:
            scores = scores.masked_fill(key_padding_mask[:, None, None, :], float("-inf"))
        elif key_padding_mask is not None:  # additive (-inf where padded), as nn.TransformerEncoder passes it
            scores = scores + key_padding_mask[:, None, None, :]
        weights = _SAFE_SOFTMAX(scores, -1)
        if self.dropout > 0.0:
            bits = self.bulk_weights and takes_bits(weights)
            weights = bulk_dropout(weights, self.dropout) if bits else F.dropout(weights, self.dropout, True)
        attended = (weights @ v).transpose(1, 2).reshape(rows, length, width)
        return F.linear(attended, self.out_proj.weight, self.out_proj.bias)


def use_attention(module: nn.Module, cpu_dropout: str) -> int:
    """Make every ``nn.MultiheadAttention`` inside ``module`` an ``Attention`` (the same parameters, moved over),
    its weights' dropout following the CPU dropout setting ``cpu_dropout``. Returns how many there are.

    The harness calls it on every model it builds (plugins included), as it sets their dropout.
    """
    bulk = resolved_cpu_dropout(cpu_dropout) == "bulk"
    count = 0
    for child in module.modules():
        if isinstance(child, nn.MultiheadAttention):
            count += 1
            if type(child) is nn.MultiheadAttention:
                child.__class__ = Attention  # same state and parameters: only the forward differs
            child.bulk_weights = bulk
    return count
