"""SASRec (docs/method.md §3) as released with DLLM2Rec and DROS: ``SASRec`` in istarryn/DLLM2Rec
``main.py`` (and YangZhengyi98/DROS ``A_SASRec_final_bce.py``) with ``MultiHeadAttention`` and
``PositionwiseFeedForward`` from their ``SASRecModules_ori.py``.

Input: item embeddings + learned positions, dropout, padding positions zeroed (``x``). Per block:

    q   = LN_1(x)
    a   = softmax(Q K^T / sqrt(hidden) + causal and padded-key masks) V + q,
          Q = W_q q, K = W_k x, V = W_v x (heads split along the width; the scale is sqrt of the
          whole hidden size, not of the head width, as released)
    y   = LN_2(a)
    out = LN_ff(dropout(W_2 relu(W_1 y)) + y)       (the released feed-forward ends with its own
          LayerNorm of output + residual; W_1, W_2 are its 1x1 convolutions, width ``hidden``)
    x   = out * mask                                 (padding positions zeroed)

then a final LN_3 and the state at the last real position. Right padding plus the causal mask
means real positions never see padding, so the released query mask (it only touches padding
rows) is not needed. ``tests/test_student_backbones.py`` checks a block against a transcription of
the released equations with the same weights.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from dllm2rec.io import UserError
from dllm2rec.settings import SASRecOptions
from dllm2rec.student.base import Dropout, SequentialRecommender, register_backbone


class Block(nn.Module):
    def __init__(self, hidden: int, num_heads: int, dropout: float):
        super().__init__()
        if hidden % num_heads:
            raise UserError(f"hidden {hidden} is not divisible by num_heads {num_heads}")
        self.h = num_heads
        self.ln_q = nn.LayerNorm(hidden)
        self.q = nn.Linear(hidden, hidden)
        self.k = nn.Linear(hidden, hidden)
        self.v = nn.Linear(hidden, hidden)
        self.attn_drop = Dropout(dropout)
        self.ln_ff = nn.LayerNorm(hidden)
        self.ff1 = nn.Linear(hidden, hidden)
        self.ff2 = nn.Linear(hidden, hidden)
        self.ff_drop = Dropout(dropout)
        self.ln_ff_out = nn.LayerNorm(hidden)  # PositionwiseFeedForward.layer_norm of the released code
        self.scale = hidden ** -0.5

    def forward(self, x: torch.Tensor, bias: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        B, L, d = x.shape
        q_in = self.ln_q(x)
        q = self.q(q_in).view(B, L, self.h, -1).transpose(1, 2)  # [B, h, L, d/h]
        k = self.k(x).view(B, L, self.h, -1).transpose(1, 2)
        v = self.v(x).view(B, L, self.h, -1).transpose(1, 2)
        att = (q @ k.transpose(-1, -2)) * self.scale + bias  # bias [B, 1, L, L]: 0 or -inf
        att = self.attn_drop(att.softmax(-1))
        x = (att @ v).transpose(1, 2).reshape(B, L, d) + q_in
        y = self.ln_ff(x)
        x = self.ln_ff_out(self.ff_drop(self.ff2(F.relu(self.ff1(y)))) + y)
        return x * mask


@register_backbone("sasrec")
class SASRec(SequentialRecommender):
    def __init__(self, n_items: int, num_heads: int = SASRecOptions.num_heads,
                 num_blocks: int = SASRecOptions.num_blocks, **kwargs):
        super().__init__(n_items, **kwargs)
        hidden = self.hidden
        self.pos_emb = nn.Embedding(self.max_len, hidden)
        self.blocks = nn.ModuleList(Block(hidden, int(num_heads), self.dropout.p) for _ in range(int(num_blocks)))
        self.ln_out = nn.LayerNorm(hidden)

    def encode(self, history, lengths, table=None):
        B, L = history.shape
        real = history != self.pad  # [B, L]
        mask = real.unsqueeze(-1).to(torch.float32)
        x = self.embed(history, table) + self.pos_emb.weight[:L]
        x = self.dropout(x) * mask
        causal = torch.ones(L, L, dtype=torch.bool, device=history.device).tril()
        allowed = causal & real[:, None, None, :]  # [B, 1, L, L]
        bias = torch.zeros(allowed.shape, dtype=x.dtype, device=x.device).masked_fill(~allowed, float("-inf"))
        for block in self.blocks:
            x = block(x, bias, mask)
        x = self.ln_out(x)
        idx = (lengths - 1).clamp_min(0).view(-1, 1, 1).expand(-1, 1, x.shape[-1])
        return x.gather(1, idx).squeeze(1)
