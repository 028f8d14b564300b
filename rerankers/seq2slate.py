"""Seq2Slate: re-ranking with a pointer network (Bello et al. 2018)."""

from __future__ import annotations

import torch
from torch import nn

from rerankers.batch import SlateBatch, mask_padding, reading_order, user_item_features
from rerankers.registry import register


# d_model capped at 88: 1.84x the default cell's training FLOPs per sample (128: 3.8x), docs/tuning.md.
@register("seq2slate", search_space={"d_model": [32, 64, 88]})
class Seq2Slate(nn.Module):
    """Seq2Slate (Bello et al. 2018): LSTM encoder + pointer-network decoder; scores from its first pointer step.

    Architecture: user + item features are embedded (linear + ReLU, width ``d_model``); an LSTM
    encoder reads the real items in their initial order; an LSTM-cell decoder starts from the
    encoder's final state with a learned "go" input and points at the items with additive
    attention, ``u_i = v^T tanh(W_enc e_i + W_dec d_t)`` (padded items masked to -inf).

    How it is trained and scored (the same decision in both modes): the scores are the first
    decoding step's pointer logits ``u_i`` over the whole list, in train and in eval mode alike,
    and sorting by them gives the ranking. The harness trains them with its listwise loss over
    the displayed items, as for every model. The paper's inference decodes greedily, one item
    per step, feeding each pick back to the decoder; its supervised training is a per-step
    cross-entropy with teacher forcing over the labels' order. A model here never sees labels
    (the harness's loss does), so only the first step can be trained; scoring by the greedy
    decoding made the order below the first pick (and with it slate_acc whenever the best
    candidate was undisplayed, about half the founding lists) come from decoder states no loss
    had ever trained. The paper's other mode, REINFORCE on sampled slates, would need a reward
    in the loop and is not implemented.

    Reads the list in its initial order: not permutation-equivariant. Cost per list: the
    encoder's L sequential LSTM steps, O(L d^2), then one pointer step, O(L d) attention.
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
        """Encoder outputs back in the input's slots (0 at padding), and the final (h, c) of each list.

        The encoder's LSTM steps through the list in reading order (real items first, padding last); a list's
        state stops changing after its last real item (a list without one reads one slot, as a packed sequence
        of length 1 would). The same function as running ``self.encoder`` on the packed real items, without
        packing: packing needs the lengths on the host (a synchronisation on a GPU).
        """
        rows, length = batch.mask.shape
        order = reading_order(batch).unsqueeze(-1).expand(-1, -1, self.d_model)
        inputs = embedded.gather(1, order)
        lengths = batch.mask.sum(dim=1, keepdim=True).clamp_min(1)
        real = torch.arange(length, device=lengths.device) < lengths  # [B, L], in reading order
        lstm = self.encoder
        weights = (lstm.weight_ih_l0, lstm.weight_hh_l0, lstm.bias_ih_l0, lstm.bias_hh_l0)
        h = c = inputs.new_zeros(rows, self.d_model)
        steps = []
        for step in range(length):
            h_next, c_next = torch.lstm_cell(inputs[:, step], (h, c), *weights)
            now = real[:, step : step + 1]
            h, c = torch.where(now, h_next, h), torch.where(now, c_next, c)
            steps.append(h_next.masked_fill(~now, 0.0))
        outputs = torch.stack(steps, dim=1)
        return torch.zeros_like(outputs).scatter_(1, order, outputs), (h, c)

    def forward(self, batch: SlateBatch) -> torch.Tensor:
        rows = batch.mask.shape[0]
        encoded, state = self._encode(batch, self.embed(user_item_features(batch)))
        hidden, _ = self.decoder(self.go.expand(rows, -1), state)  # the first decoding step
        pointer = self.v(torch.tanh(self.w_enc(encoded) + self.w_dec(hidden).unsqueeze(1))).squeeze(-1)
        return mask_padding(pointer, batch.mask)
