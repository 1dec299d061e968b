"""Ranking Distillation (RD, Tang & Wang KDD 2018).

The teacher's top-K items of each sequence are extra positives for the student, weighted by
position (static, w^a_r ∝ exp(-r/λ)) and, after a warm-up, by the student's rank gap
(dynamic, w^b_r = tanh(max(μ (r̂_r - r), 0))); the hybrid uses w^a·w^b renormalised.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from dllm2rec.distill.base import Batch, DistillContext, DistillMethod, register_method
from dllm2rec.distill.common import student_ranks, teacher_rows
from dllm2rec.distill.spec import RDOptions


@register_method("rd")
class RD(DistillMethod):
    """L = lambda_kd * mean_s [ - Σ_{r=1..K} w_sr log σ(ŷ_{s,π_sr}) ],  Σ_r w_sr = 1.

    weighting "position": w = w^a; "dynamic": w = w^b/Σ w^b; "hybrid": w = w^a w^b / Σ w^a w^b.
    Dynamic and hybrid fall back to w^a during the first ``warmup_epochs`` epochs.
    """

    Options = RDOptions

    def __init__(self, cfg: dict, ctx: DistillContext, student: nn.Module):
        super().__init__(cfg, ctx, student)
        self.lambda_kd = self.opt.lambda_kd
        self.k = self.opt.k
        self.lam = self.opt.lam
        self.mu = self.opt.mu
        self.warmup_epochs = self.opt.warmup_epochs
        self.weighting = self.opt.weighting

    def weights(self, items: torch.Tensor, scores: torch.Tensor, epoch: int) -> torch.Tensor:
        k = items.shape[1]
        r = torch.arange(1, k + 1, device=scores.device, dtype=torch.float32)
        wa = torch.softmax(-r / self.lam, dim=0).expand(items.shape[0], k)
        if self.weighting == "position" or epoch < self.warmup_epochs:
            return wa
        rhat = student_ranks(scores.detach()).gather(1, items).float()
        wb = torch.tanh((self.mu * (rhat - r)).clamp_min(0))
        w = wa * wb if self.weighting == "hybrid" else wb
        return w / w.sum(1, keepdim=True).clamp_min(1e-12)

    def loss(self, batch: Batch, scores, state, student, epoch: int) -> torch.Tensor:
        items, _ = teacher_rows(self.ctx, batch, scores.device, self.k)
        w = self.weights(items, scores, epoch)
        ll = F.logsigmoid(scores.gather(1, items))
        return self.lambda_kd * -(w * ll).sum(1).mean()
