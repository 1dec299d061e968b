"""Dual Correction Distillation (DCD, Lee & Kim CIKM 2021), user-side correction.

Rank discrepancy between the teacher (r^T) and the student's current full ranking (r^S, from the
same forward pass, no gradient), both 1-based:
- under-estimated items (student ranks them too low): candidates are the teacher's top-N,
  weight w^up_j = tanh(max(ε (r^S_j - r^T_j), 0));
- over-estimated items (student ranks them too high): candidates are the student's top-N,
  r^T_j is the item's teacher rank, or N+1 (a lower bound) when it is outside the teacher's
  list; weight w^down_j = tanh(max(ε (r^T_j - r^S_j), 0)).
K_up and K_down items are drawn without replacement with p ∝ w (zero-weight draws are dropped);
the under-estimated ones, in teacher order, are the interesting items of the RRD loss and the
over-estimated ones its uninteresting items:
    L_s = RRD(up items in teacher order ; down items).
"""
from __future__ import annotations

import torch
from torch import nn

from dllm2rec.distill.base import Batch, DistillContext, DistillMethod, register_method
from dllm2rec.distill.common import SeededSampler, multinomial_masked, student_ranks, teacher_rows
from dllm2rec.distill.rrd import relaxed_ranking_loss
from dllm2rec.distill.spec import DCDOptions


@register_method("dcd")
class DCD(DistillMethod):
    """L = lambda_kd * mean_s RRD(under-estimated ; over-estimated)."""

    Options = DCDOptions

    def __init__(self, cfg: dict, ctx: DistillContext, student: nn.Module):
        super().__init__(cfg, ctx, student)
        self.lambda_kd = self.opt.lambda_kd
        self.k_up = self.opt.k_up
        self.k_down = self.opt.k_down
        self.eps = self.opt.eps
        self.top_n = self.opt.top_n
        self.sampler = SeededSampler(ctx.seed, salt=7)

    @torch.no_grad()
    def discrepancy(self, batch: Batch, scores: torch.Tensor):
        """(teacher list [B,N], w_up [B,N], student top list [B,N'], w_down [B,N'])."""
        device = scores.device
        items, _ = teacher_rows(self.ctx, batch, device, self.top_n)
        b, n_top = items.shape
        rs = student_ranks(scores)  # [B, n]
        rt_list = torch.arange(1, n_top + 1, device=device).expand(b, -1)
        w_up = torch.tanh((self.eps * (rs.gather(1, items) - rt_list).float()).clamp_min(0))
        # teacher rank of every item: position in the list, else N+1
        rt_all = torch.full_like(rs, n_top + 1)
        rt_all.scatter_(1, items, rt_list)
        s_top = scores.topk(min(n_top, scores.shape[1]), dim=1).indices
        w_down = torch.tanh((self.eps * (rt_all.gather(1, s_top) - rs.gather(1, s_top)).float()).clamp_min(0))
        return items, w_up, s_top, w_down

    def sample(self, batch: Batch, scores: torch.Tensor):
        items, w_up, s_top, w_down = self.discrepancy(batch, scores)
        gen = self.sampler(scores.device)
        up, up_valid = multinomial_masked(w_up, self.k_up, gen)
        order = up.sort(dim=1)  # teacher order; keep the validity aligned
        up, up_valid = order.values, up_valid.gather(1, order.indices)
        down, down_valid = multinomial_masked(w_down, self.k_down, gen)
        return items.gather(1, up), up_valid, s_top.gather(1, down), down_valid

    def loss(self, batch: Batch, scores, state, student, epoch: int) -> torch.Tensor:
        up, up_valid, down, down_valid = self.sample(batch, scores.detach())
        per_row = relaxed_ranking_loss(scores.gather(1, up), up_valid, scores.gather(1, down), down_valid)
        return self.lambda_kd * per_row.mean()
