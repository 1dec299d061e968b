"""Unbiased Knowledge Distillation (UnKD, Chen et al. WSDM 2023).

Items are split into G popularity groups of (about) equal total popularity, most popular first
(popularity = how often an item is a target in train). Ranking knowledge is distilled only
*within* a group, so the teacher's popularity bias across groups is not passed on:
per sequence s and group g,
- P positives drawn without replacement from the group's items in the teacher's top-N, with
  p ∝ exp(-(r_g - 1)/T), r_g the item's rank among that group's listed items;
- Q negatives drawn uniformly (with replacement) from the group's items outside the top-N
  (the teacher ranks every one of them below every listed item of the group);
    L = mean over valid (s, g, i, j) of  -log σ(ŷ_si - ŷ_sj).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from dllm2rec.distill.base import Batch, DistillContext, DistillMethod, register_method
from dllm2rec.distill.common import SeededSampler, multinomial_masked, teacher_rows
from dllm2rec.distill.spec import UnKDOptions


def popularity_groups(counts: torch.Tensor, n_groups: int) -> torch.Tensor:
    """Group id per item (0 = most popular), contiguous in popularity, equal popularity mass."""
    n = counts.numel()
    counts = counts.double()
    order = torch.argsort(-counts, stable=True)
    c = counts[order]
    total = c.sum()
    if total <= 0:
        g_sorted = torch.arange(n) * n_groups // max(n, 1)
    else:
        before = torch.cumsum(c, 0) - c  # popularity mass of the more popular items
        g_sorted = torch.clamp((before / total * n_groups).floor().long(), max=n_groups - 1)
    groups = torch.empty(n, dtype=torch.long)
    groups[order] = g_sorted
    return groups


@register_method("unkd")
class UnKD(DistillMethod):
    Options = UnKDOptions

    def __init__(self, cfg: dict, ctx: DistillContext, student: nn.Module):
        super().__init__(cfg, ctx, student)
        self.lambda_kd = self.opt.lambda_kd
        self.n_groups = self.opt.n_groups
        self.n_pos = self.opt.n_pos
        self.n_neg = self.opt.n_neg
        self.temp = self.opt.temp
        self.top_n = self.opt.top_n
        groups = popularity_groups(ctx.item_counts.cpu(), self.n_groups)
        sizes = torch.bincount(groups, minlength=self.n_groups)
        order = torch.argsort(groups, stable=True)
        start = torch.cumsum(sizes, 0) - sizes
        slot = torch.arange(groups.numel()) - start[groups[order]]
        members = torch.full((self.n_groups, int(sizes.max())), -1, dtype=torch.long)
        members[groups[order], slot] = order
        self.register_buffer("groups", groups, persistent=False)
        self.register_buffer("sizes", sizes, persistent=False)
        self.register_buffer("members", members, persistent=False)
        self.sampler = SeededSampler(ctx.seed, salt=11)

    def sample(self, batch: Batch, device):
        """(pos [B,G,P], pos_valid, neg [B,G,Q], neg_valid): item ids and masks."""
        gen = self.sampler(device)
        items, _ = teacher_rows(self.ctx, batch, device, self.top_n)
        b, n_top = items.shape
        G = self.n_groups
        in_g = self.groups[items].unsqueeze(1) == torch.arange(G, device=device).view(1, G, 1)  # [B,G,N]
        r_g = torch.cumsum(in_g.long(), dim=2)  # 1-based rank within the group's listed items
        w = torch.where(in_g, torch.exp(-(r_g - 1).float() / self.temp), torch.zeros((), device=device))
        pos, pos_valid = multinomial_masked(w.reshape(b * G, n_top), self.n_pos, gen)
        pos_items = items.unsqueeze(1).expand(b, G, n_top).reshape(b * G, n_top).gather(1, pos).view(b, G, -1)
        pos_valid = pos_valid.view(b, G, -1)
        u = torch.rand(b, G, self.n_neg, device=device, generator=gen)
        slot = (u * self.sizes.view(1, G, 1)).long().clamp_max(self.members.shape[1] - 1)
        neg_items = self.members.unsqueeze(0).expand(b, G, -1).gather(2, slot)
        listed = (neg_items.unsqueeze(-1) == items.view(b, 1, 1, n_top)).any(-1)
        neg_valid = (neg_items >= 0) & ~listed & (self.sizes.view(1, G, 1) > 0)
        return pos_items, pos_valid, neg_items.clamp_min(0), neg_valid

    def loss_from_samples(self, scores, pos, pos_valid, neg, neg_valid) -> torch.Tensor:
        b = scores.shape[0]
        sp = scores.gather(1, pos.reshape(b, -1)).view(pos.shape)
        sn = scores.gather(1, neg.reshape(b, -1)).view(neg.shape)
        pair = -F.logsigmoid(sp.unsqueeze(-1) - sn.unsqueeze(-2))  # [B,G,P,Q]
        valid = pos_valid.unsqueeze(-1) & neg_valid.unsqueeze(-2)
        total = torch.where(valid, pair, torch.zeros_like(pair)).sum()
        return self.lambda_kd * total / valid.sum().clamp_min(1)

    def loss(self, batch: Batch, scores, state, student, epoch: int) -> torch.Tensor:
        return self.loss_from_samples(scores, *self.sample(batch, scores.device))
