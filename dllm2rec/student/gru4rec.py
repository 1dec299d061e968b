"""GRU4Rec (docs/method.md §3): one GRU layer over the history, the last real step's hidden state.

The released code packs the right-padded history (``pack_padded_sequence``) and takes the final
hidden state. A GRU is causal, so running it over the padded batch and reading the output at
position ``length - 1`` gives the same numbers without the packing cost (tested against the
packed form in tests/test_student_backbones.py). Like the released GRU it has no dropout.
"""
from __future__ import annotations

import torch
from torch import nn

from dllm2rec.student.base import SequentialRecommender, register_backbone


@register_backbone("gru4rec")
class GRU4Rec(SequentialRecommender):
    def __init__(self, n_items: int, **kwargs):
        super().__init__(n_items, **kwargs)
        self.gru = nn.GRU(self.hidden, self.hidden, num_layers=1, batch_first=True)

    def encode(self, history, lengths, table=None):
        x = self.embed(history, table)
        out = self._gru_steps(x) if self.stacked else self.gru(x)[0]  # [B, L, d]
        idx = (lengths - 1).clamp_min(0).view(-1, 1, 1).expand(-1, 1, out.shape[-1])
        return out.gather(1, idx).squeeze(1)

    def _gru_steps(self, x: torch.Tensor) -> torch.Tensor:
        """The GRU written out step by step with ``nn.GRU``'s own weights (gates r, z, n as
        ``torch.nn.GRU`` documents them), for fused training: ``torch.func.vmap`` has no rule
        for the fused GRU kernel. Same numbers up to float rounding (tests/test_student_fused.py)."""
        g = self.gru
        xi = x @ g.weight_ih_l0.t() + g.bias_ih_l0  # [B, L, 3d], every step's input part at once
        h = x.new_zeros(x.shape[0], x.shape[2])
        outs = []
        for t in range(x.shape[1]):
            hh = h @ g.weight_hh_l0.t() + g.bias_hh_l0
            i_r, i_z, i_n = xi[:, t].chunk(3, -1)
            h_r, h_z, h_n = hh.chunk(3, -1)
            r = torch.sigmoid(i_r + h_r)
            z = torch.sigmoid(i_z + h_z)
            n = torch.tanh(i_n + r * h_n)
            h = (1 - z) * n + z * h
            outs.append(h)
        return torch.stack(outs, 1)
