"""Unbiased Knowledge Distillation (UnKD, Chen et al. WSDM 2023), as in chengang95/UnKD
(``sample.py`` class ``UnKD``, ``dataloader.py`` ``splitGroup``).

Items are split into popularity groups (train target counts; ``splitGroup``'s greedy cut into
groups of about total/G interactions, most popular first; never-seen items belong to no group).
Ranking knowledge is distilled only *within* a group, so the teacher's popularity bias across
groups is not passed on. Per sequence s and group g, the candidates are the group's items that
are neither in s's history nor its target, in the teacher's order; a pair of positions is drawn
with p(r) ∝ exp(-r/T) each (with replacement), the better-ranked item is the positive, and tied
draws are drawn again. ``round(n_samples / G)`` pairs per group (UnKD's ``lamda = 0``: equal
group shares, the first groups get one more while the total is short of ``n_samples``):

    L = lambda_kd · mean over the pairs (s, i, j) of -log σ(ŷ_si - ŷ_sj)

Adaptation: the teacher (BIGRec) ranks only its top-N list. A group's listed candidates come
first, in list order; its other candidates (at most 1000 - listed, as UnKD keeps the teacher's
first 1000 per group) form one block ranked below them, in unknown order: a position drawn in
the block is a uniformly drawn unlisted candidate of the group, and two draws in the block are a
tie (drawn again). Ties are redrawn from a fixed number of extra draws (``4 x`` the pairs); a
group whose draws are all ties (no listed candidate) gives no pair for that sequence.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from dllm2rec.distill.base import Batch, DistillContext, DistillMethod, register_method
from dllm2rec.distill.common import SeededSampler, seen_mask, teacher_rows
from dllm2rec.distill.spec import UnKDOptions

OVERSAMPLE = 4  # extra draws per wanted pair, to replace ties (our choice)
MAX_DEPTH = 1000  # UnKD keeps the teacher's first 1000 candidates per group (sample.py)


def popularity_groups(counts: torch.Tensor, n_groups: int) -> torch.Tensor:
    """Group id per item (0 = most popular, -1 = count 0), UnKD's ``splitGroup``: items by count
    (descending, ties by id); an item that pushes the running group total above total/G starts
    the next group (unless it is alone); a last group under half of total/G joins the one before."""
    c = counts.tolist()
    items = sorted((i for i in range(len(c)) if c[i] > 0), key=lambda i: (-c[i], i))
    aver = sum(c) / n_groups
    out, cur, cur_count = [], [], 0
    for i in items:
        cur.append(i)
        cur_count += c[i]
        if cur_count > aver:
            if len(cur) == 1:
                out.append(cur)
                cur, cur_count = [], 0
                continue
            cur.pop()
            out.append(cur)
            cur, cur_count = [i], c[i]
    if cur:
        if cur_count > aver / 2 or not out:
            out.append(cur)
        else:
            out[-1].extend(cur)
    groups = torch.full((len(c),), -1, dtype=torch.long)
    for g, members in enumerate(out):
        groups[torch.tensor(members, dtype=torch.long)] = g
    return groups


def pairs_per_group(n_groups: int, n_samples: int) -> list[int]:
    """UnKD's ``dis_n`` with equal group ratios: round(n/G) each (Python rounding), plus one
    for the first groups while the total is below n."""
    base = [round(n_samples / n_groups)] * n_groups
    short = n_samples - sum(base)
    return [b + (1 if g < short else 0) for g, b in enumerate(base)]


@register_method("unkd")
class UnKD(DistillMethod):
    Options = UnKDOptions

    def __init__(self, cfg: dict, ctx: DistillContext, student: nn.Module):
        super().__init__(cfg, ctx, student)
        o = self.opt
        self.lambda_kd, self.temp = float(o.lambda_kd), float(o.temp)
        groups = popularity_groups(ctx.item_counts.cpu(), int(o.n_groups))
        self.n_groups = int(groups.max()) + 1 if (groups >= 0).any() else 0
        self.n_pairs = pairs_per_group(self.n_groups, int(o.n_samples)) if self.n_groups else []
        sizes = torch.bincount(groups[groups >= 0], minlength=self.n_groups)
        members = torch.full((self.n_groups, max(int(sizes.max()) if self.n_groups else 1, 1)), -1, dtype=torch.long)
        for g in range(self.n_groups):
            ids = torch.nonzero(groups == g).flatten()
            members[g, : ids.numel()] = ids
        self.register_buffer("groups", groups, persistent=False)
        self.register_buffer("sizes", sizes, persistent=False)
        self.register_buffer("members", members, persistent=False)
        self.sampler = SeededSampler(ctx.seed, salt=11)

    def draw_unlisted(self, blocked: torch.Tensor, g: int, shape, gen, tries: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
        """Uniform items of group g not ``blocked`` [B, n] (listed, history, target): [B, k] and valid."""
        b, k = shape
        size = int(self.sizes[g])
        slot = (torch.rand(b, k, tries, device=blocked.device, generator=gen) * size).long().clamp_max(size - 1)
        cand = self.members[g][slot]  # [B, k, tries]
        ok = ~blocked.gather(1, cand.view(b, -1)).view(b, k, tries)
        first = ok.float().argmax(-1, keepdim=True)
        return cand.gather(-1, first).squeeze(-1), ok.any(-1)

    def sample(self, batch: Batch, device):
        """(pos [B, P], neg [B, P], valid [B, P]) over all groups, P = Σ_g pairs."""
        gen = self.sampler(device)
        items, _ = teacher_rows(self.ctx, batch, device)
        b, n_top = items.shape
        seen = seen_mask(batch.history.to(device), batch.target.to(device), self.ctx.n_items)
        blocked = seen.clone()
        blocked.scatter_(1, items, True)
        cand_ok = ~seen.gather(1, items)  # listed and not history/target
        a = math.exp(-1.0 / self.temp)
        out_pos, out_neg, out_valid = [], [], []
        for g in range(self.n_groups):
            k = self.n_pairs[g]
            in_g = cand_ok & (self.groups[items] == g)  # [B, N]
            rank = torch.cumsum(in_g.long(), 1)  # 1-based position among the group's listed candidates
            n_listed = in_g.sum(1)
            n_cand = self.sizes[g] - seen[:, self.members[g][: int(self.sizes[g])]].sum(1)
            n_block = (n_cand.clamp_max(MAX_DEPTH) - n_listed).clamp_min(0).float()
            w_list = torch.where(in_g, torch.pow(a, rank.float()), torch.zeros((), device=device))
            # Σ_{r = n_l+1}^{n_l+n_block} a^r
            w_block = torch.pow(a, n_listed.float() + 1) * (1 - torch.pow(a, n_block)) / (1 - a)
            w = torch.cat([w_list, w_block.unsqueeze(1)], 1)  # column N = the block
            alive = w.sum(1) > 0
            draws = torch.multinomial(w + (~alive).float().unsqueeze(1), 2 * OVERSAMPLE * k, replacement=True, generator=gen)
            c1, c2 = draws[:, : OVERSAMPLE * k], draws[:, OVERSAMPLE * k:]
            ok = (c1 != c2) & alive.unsqueeze(1)
            # the first k untied draws
            key = (~ok).long() * (2 * OVERSAMPLE * k) + torch.arange(OVERSAMPLE * k, device=device)
            pick = key.argsort(1)[:, :k]
            c1, c2, ok = c1.gather(1, pick), c2.gather(1, pick), ok.gather(1, pick)
            better, worse = torch.minimum(c1, c2), torch.maximum(c1, c2)  # listed columns precede the block
            pos = items.gather(1, better.clamp_max(n_top - 1))
            neg_listed = items.gather(1, worse.clamp_max(n_top - 1))
            neg_block, block_ok = self.draw_unlisted(blocked, g, (b, k), gen)
            in_block = worse == n_top
            neg = torch.where(in_block, neg_block, neg_listed)
            out_pos.append(pos)
            out_neg.append(neg)
            out_valid.append(ok & (~in_block | block_ok))
        if not out_pos:
            z = torch.zeros(b, 0, dtype=torch.long, device=device)
            return z, z, z.bool()
        return torch.cat(out_pos, 1), torch.cat(out_neg, 1), torch.cat(out_valid, 1)

    def loss_from_samples(self, scores, pos, neg, valid) -> torch.Tensor:
        pair = F.softplus(scores.gather(1, neg) - scores.gather(1, pos))  # -log σ(ŷ_i - ŷ_j)
        return self.lambda_kd * torch.where(valid, pair, torch.zeros_like(pair)).sum() / valid.sum().clamp_min(1)

    def loss(self, batch: Batch, scores, state, student, epoch: int) -> torch.Tensor:
        return self.loss_from_samples(scores, *self.sample(batch, scores.device))
