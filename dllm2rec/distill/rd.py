"""Ranking Distillation (RD, Tang & Wang KDD 2018).

The teacher's top-K items of each sequence are extra positives for the student, weighted by
position (static, w^a_r ∝ exp(-r/λ)) and, after a warm-up, by the student's rank gap
(dynamic, w^b_r = tanh(max(μ (r̂_r - r), 0))); the hybrid uses w^a·w^b renormalised.

Also holds the ranking helpers the other list-based baselines share (CD, RRD, DCD, UnKD).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from dllm2rec.io import UserError
from dllm2rec.distill.base import Batch, DistillContext, DistillMethod, register_method


def teacher_split(ctx: DistillContext, split: str):
    if ctx.teacher is None or split not in ctx.teacher.splits:
        raise UserError(f"teacher output for split {split!r} is not loaded")
    return ctx.teacher.splits[split]


def teacher_rows(ctx: DistillContext, batch: Batch, device, n: int | None = None):
    """The batch's teacher ranking: items [B, N'] long and distances [B, N'] float (best first)."""
    sp = teacher_split(ctx, batch.split)
    rows = batch.rows.to(sp.topk_items.device)
    items = sp.topk_items[rows]
    dist = sp.topk_dist[rows]
    if n is not None:
        items, dist = items[:, :n], dist[:, :n]
    return items.to(device).long(), dist.to(device).float()


@torch.no_grad()
def student_ranks(scores: torch.Tensor) -> torch.Tensor:
    """1-based rank of every item in the student's full ranking [B, n] (ties broken by sort)."""
    order = scores.argsort(dim=1, descending=True)
    ranks = torch.empty_like(order)
    ar = torch.arange(1, scores.shape[1] + 1, device=scores.device).expand_as(order)
    ranks.scatter_(1, order, ar)
    return ranks


class SeededSampler:
    """One torch.Generator per device, seeded from the run's seed, so sampling is reproducible."""

    def __init__(self, seed: int, salt: int):
        self.seed = int(seed) * 1000003 + salt
        self._gens: dict[str, torch.Generator] = {}

    def __call__(self, device) -> torch.Generator:
        key = str(torch.device(device))
        if key not in self._gens:
            g = torch.Generator(device=device)
            g.manual_seed(self.seed)
            self._gens[key] = g
        return self._gens[key]

    def get_state(self) -> dict:
        return {key: g.get_state() for key, g in self._gens.items()}

    def set_state(self, state: dict) -> None:
        for key, st in state.items():
            self(key).set_state(st)


def multinomial_masked(weights: torch.Tensor, k: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Sample k columns per row without replacement with p ∝ weights (>= 0).

    Rows with fewer than k positive weights still return k indices: the extra ones are drawn
    among the zero-weight columns and flagged invalid. Returns (idx [R, k], valid [R, k]).
    """
    k = min(k, weights.shape[1])
    w = weights.clamp_min(0)
    # a tiny floor keeps torch.multinomial legal; floor-weight picks only happen once every
    # positive-weight column is taken (probability ~1e-30 otherwise) and are masked out.
    idx = torch.multinomial(w + 1e-30, k, replacement=False, generator=gen)
    valid = w.gather(1, idx) > 0
    return idx, valid


@register_method("rd")
class RD(DistillMethod):
    """L = lambda_kd * mean_s [ - Σ_{r=1..K} w_sr log σ(ŷ_{s,π_sr}) ],  Σ_r w_sr = 1.

    weighting "position": w = w^a; "dynamic": w = w^b/Σ w^b; "hybrid": w = w^a w^b / Σ w^a w^b.
    Dynamic and hybrid fall back to w^a during the first ``warmup_epochs`` epochs.
    """

    needs = frozenset({"ranks"})

    def __init__(self, cfg: dict, ctx: DistillContext, student: nn.Module):
        super().__init__(cfg, ctx, student)
        self.lambda_kd = float(self.cfg.get("lambda_kd", 1.0))
        self.k = int(self.cfg.get("k", 10))
        self.lam = float(self.cfg.get("lam", 1.0))
        self.mu = float(self.cfg.get("mu", 0.1))
        self.warmup_epochs = int(self.cfg.get("warmup_epochs", 2))
        self.weighting = str(self.cfg.get("weighting", "hybrid"))
        if self.weighting not in ("position", "dynamic", "hybrid"):
            raise UserError("rd.weighting must be position, dynamic or hybrid")

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
