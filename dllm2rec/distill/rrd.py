"""Relaxed Ranking Distillation (RRD, from DE-RRD, Kang et al. CIKM 2020), as in
SeongKu-Kang/DE-RRD_CIKM20 (``main_URRD.py``, ``Utils/dataset.py``, ``Utils/loss.py``).

Per sequence: K "interesting" items drawn without replacement from the teacher's list with
p(r) ∝ exp(-r/T), kept in the teacher's order, and L "uninteresting" items drawn uniformly
without replacement from the items that are neither in the teacher's list nor in the
sequence's history nor its target. The relaxed Plackett-Luce loss orders the interesting items
only and just asks that each one beats every uninteresting item:

    L_s = - Σ_{k=1..K} log( exp(ŷ_{π_k}) / ( Σ_{i=k..K} exp(ŷ_{π_i}) + Σ_{l=1..L} exp(ŷ_{u_l}) ) )
    L   = lambda_kd · mean_s L_s

The official code sums L_s (and its BPR loss) over the batch; our recommendation loss is a batch
mean, so the sum divided by the batch size (mean_s) keeps λ on the official scale.
"""
from __future__ import annotations

import torch
from torch import nn

from dllm2rec.distill.base import Batch, DistillContext, DistillMethod, register_method
from dllm2rec.distill.common import SeededSampler, multinomial_masked, sample_negatives, teacher_rows
from dllm2rec.distill.spec import RRDOptions

_NEG = -1e9  # stands for -inf in masked log-sum-exps (finite, so gradients stay finite)


def relaxed_ranking_loss(pos: torch.Tensor, pos_valid: torch.Tensor, neg: torch.Tensor, neg_valid: torch.Tensor) -> torch.Tensor:
    """Per-row relaxed ranking loss [B].

    pos [B, K]: student scores of the interesting items in the teacher's order (best first),
    neg [B, L]: student scores of the uninteresting items; *_valid masks entries that take part.
    """
    pos_m = pos.masked_fill(~pos_valid, _NEG)
    neg_lse = neg.masked_fill(~neg_valid, _NEG).logsumexp(1, keepdim=True)  # [B, 1]
    tail = torch.logcumsumexp(pos_m.flip(1), dim=1).flip(1)  # log Σ_{i>=k} exp(pos_i)
    denom = torch.logaddexp(tail, neg_lse)
    terms = torch.where(pos_valid, pos - denom, torch.zeros_like(pos))
    return -terms.sum(1)


def rank_sample(n_rows: int, width: int, k: int, temp: float, gen: torch.Generator, device) -> torch.Tensor:
    """k list positions per row, without replacement, p(r) ∝ exp(-r/T) (r = 1-based position),
    sorted (teacher order) [n_rows, k]."""
    r = torch.arange(1, width + 1, device=device, dtype=torch.float32)
    w = torch.exp(-r / temp).expand(n_rows, -1).contiguous()
    pos, _ = multinomial_masked(w, k, gen)
    return pos.sort(dim=1).values


@register_method("rrd")
class RRD(DistillMethod):
    """L = lambda_kd * mean_s L_s (relaxed ranking, see the module docstring)."""

    Options = RRDOptions

    def __init__(self, cfg: dict, ctx: DistillContext, student: nn.Module):
        super().__init__(cfg, ctx, student)
        self.lambda_kd, self.k, self.l, self.temp = self.opt.lambda_kd, self.opt.k, self.opt.l, self.opt.temp
        self.sampler = SeededSampler(ctx.seed, salt=5)

    def sample(self, batch: Batch, device, n_items: int):
        """(interesting items [B, K] in teacher order, uninteresting items [B, L], their valid mask)."""
        gen = self.sampler(device)
        items, _ = teacher_rows(self.ctx, batch, device)
        b, n_top = items.shape
        interesting = items.gather(1, rank_sample(b, n_top, self.k, self.temp, gen, device))
        unint, unint_valid = sample_negatives(batch.history.to(device), batch.target.to(device), n_items, self.l,
                                              gen, exclude=items)
        return interesting, unint, unint_valid

    def loss(self, batch: Batch, scores, state, student, epoch: int) -> torch.Tensor:
        interesting, unint, unint_valid = self.sample(batch, scores.device, scores.shape[1])
        pos = scores.gather(1, interesting)
        neg = scores.gather(1, unint)
        per_row = relaxed_ranking_loss(pos, torch.ones_like(pos, dtype=torch.bool), neg, unint_valid)
        return self.lambda_kd * per_row.mean()
