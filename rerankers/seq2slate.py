"""Seq2Slate: re-ranking with a pointer network (Bello et al. 2018)."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from rerankers.batch import SlateBatch, mask_padding, reading_order, user_item_features
from rerankers.registry import register


@register("seq2slate")
class Seq2Slate(nn.Module):
    """Seq2Slate (Bello et al. 2018): LSTM encoder + pointer-network decoder that picks one item per step.

    Architecture: user + item features are embedded (linear + ReLU, width ``d_model``); an LSTM
    encoder reads the real items in their initial order; an LSTM-cell decoder starts from the
    encoder's final state with a learned "go" input, and at each step points at one item with
    additive attention, ``u_i = v^T tanh(W_enc e_i + W_dec d_t)``, over the items not yet picked
    (picked and padded items are masked to -inf); the picked item's embedding is the next input.

    How scores are derived: in eval mode the decoder decodes greedily (arg-max pointer at every
    step) and an item's score is ``L - t`` for the step t (0-based) at which it was picked, so
    sorting by score reproduces the decoding order; the scores are integers and carry no
    confidence beyond the order.

    How it is trained: the paper's supervised mode is teacher forcing with a per-step
    cross-entropy between the pointer distribution and the labels of the items still to be
    placed. With one click per list that loss has a target at the first step only (after the
    clicked item is placed no positive label remains), so in train mode the model returns the
    first step's pointer logits over the list and the harness's listwise loss trains exactly that
    decision. Later steps share every weight with the first but are never trained on their own
    states; the paper's other mode, REINFORCE on sampled slates, would need a reward in the loop
    and is not implemented here.

    Reads the list in its initial order: not permutation-equivariant. Cost per list: the
    encoder's L LSTM steps, then L sequential decoder steps of O(L d) attention each, O(L^2 d)
    in all, and the decoding loop makes eval (and batch-1 latency) L times more sequential
    than a one-pass scorer.
    """

    def __init__(self, user_dim: int, item_dim: int, d_model: int = 64) -> None:
        super().__init__()
        self.d_model = d_model
        self.embed = nn.Sequential(nn.Linear(user_dim + item_dim, d_model), nn.ReLU())
        self.encoder = nn.LSTM(d_model, d_model, batch_first=True)
        self.decoder = nn.LSTMCell(d_model, d_model)
        self.go = nn.Parameter(torch.randn(d_model) / d_model**0.5)
        self.w_enc = nn.Linear(d_model, d_model, bias=False)
        self.w_dec = nn.Linear(d_model, d_model)
        self.v = nn.Linear(d_model, 1, bias=False)

    def _encode(self, batch: SlateBatch, embedded: torch.Tensor):
        """Encoder outputs back in the input's slots, and the final (h, c) of each list."""
        order = reading_order(batch).unsqueeze(-1).expand(-1, -1, self.d_model)
        lengths = batch.mask.sum(dim=1).clamp_min(1).cpu()
        packed = pack_padded_sequence(embedded.gather(1, order), lengths, batch_first=True, enforce_sorted=False)
        outputs, (h, c) = self.encoder(packed)
        outputs, _ = pad_packed_sequence(outputs, batch_first=True, total_length=embedded.shape[1])
        return torch.zeros_like(outputs).scatter_(1, order, outputs), (h[0], c[0])

    def _pointer(self, reference: torch.Tensor, hidden: torch.Tensor, available: torch.Tensor) -> torch.Tensor:
        logits = self.v(torch.tanh(reference + self.w_dec(hidden).unsqueeze(1))).squeeze(-1)
        return logits.masked_fill(~available, float("-inf"))

    def forward(self, batch: SlateBatch) -> torch.Tensor:
        rows, length = batch.mask.shape
        embedded = self.embed(user_item_features(batch))
        encoded, state = self._encode(batch, embedded)
        reference = self.w_enc(encoded)
        available = batch.mask.clone()
        state = self.decoder(self.go.expand(rows, -1), state)
        logits = self._pointer(reference, state[0], available)
        if self.training:
            return mask_padding(logits, batch.mask)
        scores = torch.zeros(rows, length, device=logits.device, dtype=logits.dtype)
        for step in range(length):
            pick = logits.argmax(dim=1, keepdim=True)
            valid = available.gather(1, pick)  # False once a list has no item left
            scores.scatter_(1, pick, torch.where(valid, float(length - step), scores.gather(1, pick)))
            available = available.scatter(1, pick, False)
            if step + 1 < length:
                chosen = embedded.gather(1, pick.unsqueeze(-1).expand(-1, -1, self.d_model)).squeeze(1)
                state = self.decoder(chosen, state)
                logits = self._pointer(reference, state[0], available)
        return mask_padding(scores, batch.mask)
