"""GRU4Rec (docs/method.md §3): one GRU layer over the history, the last real step's hidden state.

The released code packs the right-padded history (``pack_padded_sequence``) and takes the final
hidden state. A GRU is causal, so running it over the padded batch and reading the output at
position ``length - 1`` gives the same numbers without the packing cost (tested against the
packed form in tests/test_student_backbones.py). Like the released GRU it has no dropout.
"""
from __future__ import annotations

from torch import nn

from dllm2rec.student.base import SequentialRecommender, register_backbone


@register_backbone("gru4rec")
class GRU4Rec(SequentialRecommender):
    def __init__(self, n_items: int, hidden: int = 64, dropout: float = 0.1, max_len: int = 10, **kwargs):
        super().__init__(n_items, hidden, dropout, max_len, **kwargs)
        self.gru = nn.GRU(hidden, hidden, num_layers=1, batch_first=True)

    def encode(self, history, lengths, table=None):
        out, _ = self.gru(self.embed(history, table))  # [B, L, d]
        idx = (lengths - 1).clamp_min(0).view(-1, 1, 1).expand(-1, 1, out.shape[-1])
        return out.gather(1, idx).squeeze(1)
