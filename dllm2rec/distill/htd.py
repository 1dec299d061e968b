"""Hierarchical Topology Distillation (HTD, Kang et al. KDD 2021) on item embeddings.

The student learns the *topology* (pairwise cosine similarities) of the teacher's item space,
not its coordinates, so no projection between the two widths is needed. The teacher space is
split into G groups (a seeded spherical k-means on the standardised title embeddings, computed
once); the hierarchy is
- group level: similarities among the G group prototypes (mean embedding of the group),
- entity level: similarities among items *of the same group* (here: the batch's items).

    L = lambda_kd * ( α · mean_{g≠h} (c^T_gh - c^S_gh)^2
                    + (1-α) · mean_{i≠j in I_B, grp(i)=grp(j)} (c^T_ij - c^S_ij)^2 )

c^T on standardised teacher embeddings, c^S on the student's item ID embeddings; the student's
prototypes are the means of its current embeddings over every item of the group.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from dllm2rec.distill.base import Batch, DistillContext, DistillMethod, register_method
from dllm2rec.distill.common import batch_items, standardize, teacher_item_emb
from dllm2rec.distill.spec import HTDOptions


def spherical_kmeans(x: torch.Tensor, k: int, iters: int, seed: int) -> torch.Tensor:
    """Seeded spherical k-means on rows of ``x`` (L2-normalised); returns a group id per row."""
    x = F.normalize(x.float(), dim=1)
    k = max(1, min(k, x.shape[0]))
    g = torch.Generator().manual_seed(int(seed))
    cent = x[torch.randperm(x.shape[0], generator=g)[:k]].clone()
    assign = torch.zeros(x.shape[0], dtype=torch.long)
    for _ in range(iters):  # iterations over the whole table, not over rows
        assign = (x @ cent.T).argmax(1)
        sums = torch.zeros_like(cent).index_add_(0, assign, x)
        counts = torch.bincount(assign, minlength=k)
        nonempty = counts > 0
        cent[nonempty] = F.normalize(sums[nonempty], dim=1)
    return (x @ cent.T).argmax(1)


@register_method("htd")
class HTD(DistillMethod):
    Options = HTDOptions

    def __init__(self, cfg: dict, ctx: DistillContext, student: nn.Module):
        super().__init__(cfg, ctx, student)
        self.lambda_kd = self.opt.lambda_kd
        self.n_groups = self.opt.n_groups
        self.alpha = self.opt.alpha
        iters = self.opt.kmeans_iters
        z = standardize(teacher_item_emb(ctx))
        groups = spherical_kmeans(z, self.n_groups, iters, ctx.seed)
        self.n_groups = int(groups.max()) + 1 if groups.numel() else 0
        zn = F.normalize(z, dim=1)
        counts = torch.bincount(groups, minlength=self.n_groups)
        proto = torch.zeros(self.n_groups, z.shape[1]).index_add_(0, groups, z) / counts.clamp_min(1).unsqueeze(1).float()
        proto = F.normalize(proto, dim=1)
        self.register_buffer("zn", zn, persistent=False)
        self.register_buffer("groups", groups, persistent=False)
        self.register_buffer("group_counts", counts, persistent=False)
        self.register_buffer("t_group", proto @ proto.T, persistent=False)

    def group_loss(self, emb: torch.Tensor) -> torch.Tensor:
        G = self.n_groups
        proto = torch.zeros(G, emb.shape[1], device=emb.device, dtype=emb.dtype).index_add(0, self.groups, emb)
        proto = F.normalize(proto / self.group_counts.clamp_min(1).unsqueeze(1).to(emb.dtype), dim=1)
        c_s = proto @ proto.T
        mask = ~torch.eye(G, dtype=torch.bool, device=emb.device)
        mask &= (self.group_counts > 0).unsqueeze(0) & (self.group_counts > 0).unsqueeze(1)
        d2 = (self.t_group - c_s).pow(2)
        return torch.where(mask, d2, torch.zeros_like(d2)).sum() / mask.sum().clamp_min(1)

    def entity_loss(self, emb: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        es = F.normalize(emb[items], dim=1)
        zt = self.zn[items]
        g = self.groups[items]
        mask = (g.unsqueeze(0) == g.unsqueeze(1)) & ~torch.eye(items.numel(), dtype=torch.bool, device=emb.device)
        d2 = (zt @ zt.T - es @ es.T).pow(2)
        return torch.where(mask, d2, torch.zeros_like(d2)).sum() / mask.sum().clamp_min(1)

    def loss(self, batch: Batch, scores, state, student, epoch: int) -> torch.Tensor:
        emb = student.item_emb.weight[: self.ctx.n_items]
        items = batch_items(batch, self.ctx.n_items).to(emb.device)
        l_grp = self.group_loss(emb)
        l_ent = self.entity_loss(emb, items)
        return self.lambda_kd * (self.alpha * l_grp + (1 - self.alpha) * l_ent)
