"""Collaborative Distillation (CD, Lee et al. ICDM 2019), teacher-guided rank-aware sampling.

Per sequence, m items are drawn from the teacher's ranked list with p(r) ∝ exp(-r/λ) (without
replacement) and the student fits their soft labels q = σ((t + t2)/t1) by binary cross-entropy.

The teacher's score t is derived from BIGRec's grounding distance (smaller = better): a
global, train-set standardisation of the negative distance,
    t_sj = (median_train(d) - d_sj) / std_train(d),
over every distance in the train split's top-N lists, so that the soft labels do not depend on
the scale of the LLM's hidden states (LLaMA distances are in the tens) and stay comparable
across sequences (a confident teacher, small distances, gives larger labels).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from dllm2rec.distill.base import Batch, DistillContext, DistillMethod, register_method
from dllm2rec.distill.common import SeededSampler, multinomial_masked, teacher_rows, teacher_split
from dllm2rec.distill.spec import CDOptions


@register_method("cd")
class CD(DistillMethod):
    """L = lambda_kd * mean_{s, sampled j} BCE(ŷ_sj, σ((t_sj + t2)/t1))."""

    Options = CDOptions

    def __init__(self, cfg: dict, ctx: DistillContext, student: nn.Module):
        super().__init__(cfg, ctx, student)
        self.lambda_kd = self.opt.lambda_kd
        self.n_samples = self.opt.n_samples
        self.rank_temp = self.opt.rank_temp
        self.t1 = self.opt.t1
        self.t2 = self.opt.t2
        self.top_n = self.opt.top_n
        d = teacher_split(ctx, "train").topk_dist[:, : self.top_n].float().reshape(-1).sort().values
        m = d.numel()
        self.d_ref = float((d[(m - 1) // 2] + d[m // 2]) / 2)  # the median (mean of the two middle values)
        self.d_scale = float(d.std(unbiased=False).clamp_min(1e-6)) if m > 1 else 1.0
        self.sampler = SeededSampler(ctx.seed, salt=3)

    def teacher_score(self, dist: torch.Tensor) -> torch.Tensor:
        return (self.d_ref - dist) / self.d_scale

    def sample(self, batch: Batch, device):
        """Sampled positions in the teacher list: (items [B, m], dist [B, m])."""
        items, dist = teacher_rows(self.ctx, batch, device, self.top_n)
        r = torch.arange(1, items.shape[1] + 1, device=device, dtype=torch.float32)
        w = torch.exp(-r / self.rank_temp).expand(items.shape[0], -1).contiguous()
        pos, _ = multinomial_masked(w, self.n_samples, self.sampler(device))
        return items.gather(1, pos), dist.gather(1, pos)

    def loss_from_samples(self, scores, items, dist) -> torch.Tensor:
        q = torch.sigmoid((self.teacher_score(dist) + self.t2) / self.t1)
        bce = F.binary_cross_entropy_with_logits(scores.gather(1, items), q, reduction="mean")
        return self.lambda_kd * bce

    def loss(self, batch: Batch, scores, state, student, epoch: int) -> torch.Tensor:
        items, dist = self.sample(batch, scores.device)
        return self.loss_from_samples(scores, items, dist)
