"""DROS (docs/method.md §3): SASRec trained with the distributionally robust loss added, L_r + α·L_DRO.

    L_DRO(s, t) = log( Σ_j exp(ps_j ŷ_sj²/β) − exp(ps_t ŷ_st²/β) + exp(ps_t (ŷ_st − 1)²/β) )
    ps_j = ((c_j + 1) / Σ_k (c_k + 1)) ** ps_power,   c = train target counts.

:func:`dro_loss` is the one implementation (DLLM2Rec's ``official`` variant reuses it with the
teacher's candidates as positives). It is computed in log space: the released ``log(Σ exp(.))``
overflows float32 once ps·ŷ²/β passes ~88.

Defaults (docs/students.md has the sources): α = 0.5, the authors' DLLM2Rec run command
(istarryn/DLLM2Rec README.md, ``--alpha 0.5``; DROS's own scripts, YangZhengyi98/DROS
``A_SASRec_final_*.py``, default to α = 0, i.e. DRO off, and take α from the command line);
β = 1.0 and ps_power = 0.05 as DLLM2Rec's ``main.py`` and DROS's scripts (0.05 since 2023-04-24).
"""
from __future__ import annotations

import torch

from dllm2rec.settings import DROSOptions
from dllm2rec.student.base import register_backbone
from dllm2rec.student.sasrec import SASRec


def propensity(item_counts: torch.Tensor, power: float) -> torch.Tensor:
    c = item_counts.to(torch.float64) + 1.0
    return (c / c.sum()).pow(power).to(torch.float32)


def dro_loss(scores: torch.Tensor, ps: torch.Tensor, target: torch.Tensor, beta: float = 1.0) -> torch.Tensor:
    """Per-row L_DRO. scores [B, n]; ps [n]; target [B] or [B, K] (K positives, one loss each).
    Returns [B] or [B, K]."""
    squeeze = target.dim() == 1
    t = target.view(target.shape[0], -1)  # [B, K]
    a = ps * scores.square() / beta  # [B, n]
    s_t = scores.gather(1, t)
    ps_t = ps[t]
    a_t = ps_t * s_t.square() / beta  # [B, K]
    b_t = ps_t * (s_t - 1.0).square() / beta  # [B, K]
    m = torch.maximum(a.amax(1, keepdim=True), b_t.amax(1, keepdim=True)).detach()  # [B, 1]
    total = (a - m).exp().sum(1, keepdim=True)  # [B, 1]
    inner = total - (a_t - m).exp() + (b_t - m).exp()
    out = m + inner.clamp_min(1e-30).log()
    return out.squeeze(1) if squeeze else out


@register_backbone("dros")
class DROS(SASRec):
    def __init__(self, n_items: int, alpha: float = DROSOptions.alpha, beta: float = DROSOptions.beta,
                 ps_power: float = DROSOptions.ps_power, item_counts: torch.Tensor | None = None, **kwargs):
        super().__init__(n_items, **kwargs)
        self.alpha = float(alpha)
        self.beta = float(beta)
        if item_counts is None:
            item_counts = torch.zeros(n_items, dtype=torch.long)
        self.register_buffer("ps", propensity(torch.as_tensor(item_counts), float(ps_power)))

    def dro(self, scores: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Per-row L_DRO with this model's propensities and β (see :func:`dro_loss`)."""
        return dro_loss(scores, self.ps, target, self.beta)

    def rec_loss(self, scores, target, negative):
        loss = super().rec_loss(scores, target, negative)
        if self.alpha:
            loss = loss + self.alpha * self.dro(scores, target).mean()
        return loss
