"""Ranking Distillation (RD, Tang & Wang KDD 2018), as in graytowne/rank_distill ``distill_caser.py``.

The teacher's top-K items of each sequence (its list with the target removed) are extra
positives of the student, weighted per position: the static weight w^a_r ∝ exp(-r/λ) (sums to
1), and from epoch ``dynamic_start_epoch`` on the hybrid w^a_r · w^b_sr with the ranking
discrepancy w^b_sr = tanh(max(μ (r̂_sr - r), 0)), without renormalisation:

    L = lambda_kd · mean_s Σ_{r=1..K} w_sr · (-log σ(ŷ_{s,π_sr}))
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from dllm2rec.distill.base import Batch, DistillContext, DistillMethod, register_method
from dllm2rec.distill.common import student_ranks, teacher_rows
from dllm2rec.distill.spec import RDOptions


def drop_target(items: torch.Tensor, target: torch.Tensor, k: int) -> torch.Tensor:
    """The first ``k`` items of each teacher list [B, N] once the row's target is removed [B, k]
    (RD's ``with_targets=False``). Rows that do not list their target keep their first k."""
    listed = (items == target.view(-1, 1)).to(torch.int8)
    order = torch.sort(listed, dim=1, stable=True).indices  # list order kept, the target moved last
    return items.gather(1, order[:, :k])


@register_method("rd")
class RD(DistillMethod):
    """L = lambda_kd * mean_s Σ_r w_sr (-log σ(ŷ_{s,π_sr})), see the module docstring."""

    Options = RDOptions

    def __init__(self, cfg: dict, ctx: DistillContext, student: nn.Module):
        super().__init__(cfg, ctx, student)
        self.k, self.lam, self.mu = self.opt.k, self.opt.lam, self.opt.mu
        # a buffer: the members of a fused group each weigh the loss by their own lambda_kd
        self.register_buffer("lambda_kd", torch.tensor(float(self.opt.lambda_kd)), persistent=False)
        self.dynamic_start_epoch = self.opt.dynamic_start_epoch
        r = torch.arange(1, self.k + 1, dtype=torch.float32)
        self.register_buffer("w_static", torch.softmax(-r / self.lam, dim=0), persistent=False)

    def weights(self, items: torch.Tensor, scores: torch.Tensor, epoch: int) -> torch.Tensor:
        """[B, K]: w^a before ``dynamic_start_epoch`` (0-based), w^a·w^b from it on."""
        k = items.shape[1]
        wa = self.w_static[:k].expand(items.shape[0], k)
        if epoch < self.dynamic_start_epoch:
            return wa
        r = torch.arange(1, k + 1, device=scores.device, dtype=torch.float32)
        rhat = student_ranks(scores.detach()).gather(1, items).float()
        return wa * torch.tanh((self.mu * (rhat - r)).clamp_min(0))

    def loss(self, batch: Batch, scores, state, student, epoch: int) -> torch.Tensor:
        items, _ = teacher_rows(self.ctx, batch, scores.device)
        target = batch.target.to(scores.device).view(-1, 1)
        items = drop_target(items, target, self.k)
        w = self.weights(items, scores, epoch) * (items != target)  # a list of <= K items keeps its target last
        return self.lambda_kd * (w * F.softplus(-scores.gather(1, items))).sum(1).mean()
