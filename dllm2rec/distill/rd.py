"""Ranking Distillation (RD, Tang & Wang KDD 2018), as in graytowne/rank_distill ``distill_caser.py``.

The teacher's top-K items of each sequence (its list with the target removed) are extra
positives of the student, weighted per position: the static weight w^a_r ∝ exp(-r/λ) (sums to
1), and from epoch ``dynamic_start_epoch`` on the hybrid w^a_r · w^b_sr with the ranking
discrepancy w^b_sr = tanh(max(μ (r̂_sr - r), 0)), without renormalisation:

    L = lambda_kd · mean_s Σ_{r=1..K} w_sr · (-log σ(ŷ_{s,π_sr}))

Also holds the ranking helpers the other list-based baselines share (CD, RRD, DCD, UnKD).
"""
from __future__ import annotations

from dataclasses import dataclass, fields

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


def options(defaults_cls, cfg: dict, method: str):
    """The method's options: ``defaults_cls`` (a dataclass) filled from ``cfg``; unknown keys
    are a UserError naming the known ones."""
    known = {f.name for f in fields(defaults_cls)}
    unknown = set(cfg) - known - {"type", "extends"}
    if unknown:
        raise UserError(f"methods.{method}: unknown key(s) {sorted(unknown)}; known: {sorted(known)}")
    return defaults_cls(**{k: v for k, v in cfg.items() if k in known})


def drop_target(items: torch.Tensor, target: torch.Tensor, k: int) -> torch.Tensor:
    """The first ``k`` items of each teacher list [B, N] once the row's target is removed [B, k]
    (RD's ``with_targets=False``). Rows that do not list their target keep their first k."""
    keep = items != target.view(-1, 1)
    # stable: listed order is kept; a removed target moves to the end
    order = torch.sort((~keep).to(torch.int8), dim=1, stable=True).indices
    return items.gather(1, order[:, :k])


def seen_items(history: torch.Tensor, target: torch.Tensor, n_items: int) -> torch.Tensor:
    """[B, n] bool: True for the row's history items and its target (never a negative)."""
    b = history.shape[0]
    mask = torch.zeros(b, n_items + 1, dtype=torch.bool, device=history.device)
    mask.scatter_(1, history, True)
    mask.scatter_(1, target.view(-1, 1), True)
    return mask[:, :n_items]


def sample_outside(excluded: torch.Tensor, k: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """k items per row drawn uniformly without replacement among the columns where ``excluded``
    [B, n] is False; (idx [B, k], valid [B, k]) as :func:`multinomial_masked`."""
    return multinomial_masked((~excluded).float(), k, gen)


@dataclass
class RDOptions:
    lambda_kd: float = 1.0  # teach_alpha (distill_caser.py)
    k: int = 10  # K
    lam: float = 1.0  # λ of the position weight
    mu: float = 0.1  # μ of the ranking-discrepancy weight
    dynamic_start_epoch: int = 10  # hybrid weights from this 0-based epoch on (epoch_num > 10, 1-based)


@register_method("rd")
class RD(DistillMethod):
    """L = lambda_kd * mean_s Σ_r w_sr (-log σ(ŷ_{s,π_sr})), see the module docstring."""

    needs = frozenset({"ranks"})

    def __init__(self, cfg: dict, ctx: DistillContext, student: nn.Module):
        super().__init__(cfg, ctx, student)
        o = options(RDOptions, self.cfg, "rd")
        self.lambda_kd, self.k, self.lam, self.mu = float(o.lambda_kd), int(o.k), float(o.lam), float(o.mu)
        self.dynamic_start_epoch = int(o.dynamic_start_epoch)
        r = torch.arange(1, self.k + 1, dtype=torch.float32)
        self.register_buffer("w_static", torch.softmax(-r / self.lam, dim=0), persistent=False)

    def weights(self, items: torch.Tensor, scores: torch.Tensor, epoch: int) -> torch.Tensor:
        k = items.shape[1]
        wa = self.w_static[:k].expand(items.shape[0], k)
        if epoch < self.dynamic_start_epoch:
            return wa
        r = torch.arange(1, k + 1, device=scores.device, dtype=torch.float32)
        rhat = student_ranks(scores.detach()).gather(1, items).float()
        wb = torch.tanh((self.mu * (rhat - r)).clamp_min(0))
        return wa * wb

    def loss(self, batch: Batch, scores, state, student, epoch: int) -> torch.Tensor:
        items, _ = teacher_rows(self.ctx, batch, scores.device)
        items = drop_target(items, batch.target.to(scores.device), self.k)
        w = self.weights(items, scores, epoch)
        return self.lambda_kd * (w * F.softplus(-scores.gather(1, items))).sum(1).mean()
