"""Collaborative Distillation (CD, Lee et al. ICDM 2019): the student fits the teacher's soft
labels on items sampled from the teacher's ranking of the unobserved items.

The authors released no code; the defaults and the sampler follow the public re-implementation
in chengang95/UnKD (``UnKD/sample.py``, class ``CD``): n_distill = 50 samples per user,
t1 = 2, t2 = 0, position weights exp(-λ·r/N) with λ = 1/20 over the teacher's list of N
unobserved items (the user's positives excluded), each sample the better-ranked of two positions
drawn with those weights (repeated until 50 distinct items), drawn once before training, and
L = mean_u mean_j BCE(σ(ŷ_uj), σ((t_uj + t2)/t1)), added to the student's loss with weight 1
(``--kd_weight`` default, ``UnKD/parse.py``).

Adaptations (docs/methods.md, "CD"): the teacher list is BIGRec's top-``top_n`` list of the
sequence with the sequence's history and target removed; the teacher's score t is derived from
BIGRec's grounding distance d (smaller = better) as a train-set standardisation of -d,
    t_sj = (median_train(d) - d_sj) / std_train(d),
so that σ(t/t1) does not depend on the scale of the LLM's hidden states (our choice).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from dllm2rec.distill.base import Batch, DistillContext, DistillMethod, register_method
from dllm2rec.distill.common import SeededSampler, multinomial_masked, seen_mask, teacher_split
from dllm2rec.distill.spec import CDOptions


def tournament_weights(valid: torch.Tensor, lam: float, list_len: int) -> torch.Tensor:
    """[R, N] probability that one tournament picks each column of a row.

    The columns that ``valid`` keeps are ranked 1..M in order; position r has weight
    p_r ∝ exp(-lam·r/list_len); a tournament draws two positions i.i.d. from p and keeps the
    better (smaller) one, so P(r) = p_r² + 2 p_r Σ_{k>r} p_k. Invalid columns get 0.
    Drawing distinct items by repeated tournaments (a repeat is redrawn) is sampling without
    replacement with these weights.
    """
    rank = valid.long().cumsum(1)  # 1-based rank among the valid columns
    p = torch.exp(-lam * rank.float() / list_len) * valid
    p = p / p.sum(1, keepdim=True).clamp_min(1e-30)
    after = p.flip(1).cumsum(1).flip(1) - p  # Σ_{k>r} p_k (columns to the right)
    return (p * p + 2 * p * after) * valid


@register_method("cd")
class CD(DistillMethod):
    """L = lambda_kd * mean_s mean_{j sampled} BCE(ŷ_sj, σ((t_sj + t2)/t1))."""

    Options = CDOptions

    def __init__(self, cfg: dict, ctx: DistillContext, student: nn.Module):
        super().__init__(cfg, ctx, student)
        o = self.opt
        sp = teacher_split(ctx, "train")
        items = sp.topk_items[:, : o.top_n].long()
        dist = sp.topk_dist[:, : o.top_n].float()
        d = dist.reshape(-1).sort().values
        m = d.numel()
        self.d_ref = float((d[(m - 1) // 2] + d[m // 2]) / 2) if m else 0.0  # the median
        self.d_scale = float(d.std(unbiased=False).clamp_min(1e-6)) if m > 1 else 1.0
        # the teacher's list without the sequence's history and target (the re-implementation
        # removes the user's train positives before taking the teacher's top list)
        seen = seen_mask(ctx.train_history.long(), ctx.train_target.long(), ctx.n_items)
        valid = ~seen.gather(1, items)
        w = tournament_weights(valid, o.lam, items.shape[1])
        gen = SeededSampler(ctx.seed, salt=3)("cpu")
        pos, ok = multinomial_masked(w, o.n_samples, gen) if items.shape[1] else (items, valid)
        # drawn once before training, as the re-implementation does (buffers, not saved)
        self.register_buffer("samples", items.gather(1, pos), persistent=False)
        self.register_buffer("sample_score", self.teacher_score(dist.gather(1, pos)), persistent=False)
        self.register_buffer("sample_valid", ok, persistent=False)
        # a buffer: the members of a fused group each weigh the loss by their own lambda_kd
        self.register_buffer("lambda_kd", torch.tensor(float(o.lambda_kd)), persistent=False)

    def teacher_score(self, dist: torch.Tensor) -> torch.Tensor:
        return (self.d_ref - dist) / self.d_scale

    def soft_labels(self, score: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid((score + self.opt.t2) / self.opt.t1)

    def loss(self, batch: Batch, scores, state, student, epoch: int) -> torch.Tensor:
        rows = batch.rows.to(self.samples.device)
        items = self.samples[rows].to(scores.device)
        q = self.soft_labels(self.sample_score[rows]).to(scores.device)
        ok = self.sample_valid[rows].to(scores.device).float()
        bce = F.binary_cross_entropy_with_logits(scores.gather(1, items), q, reduction="none")
        per_row = (bce * ok).sum(1) / ok.sum(1).clamp_min(1)
        return self.lambda_kd * per_row.mean()
