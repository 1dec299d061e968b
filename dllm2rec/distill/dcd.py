"""Dual Correction Distillation (DCD, Lee & Kim CIKM 2021), as in dudwns511/DCD_CIKM21 ``run_dcd.py``.

Every ``refresh_every`` epochs (``epoch % 3 == 0`` in the released code) the student scores every
train sequence's teacher list; within each list, r^T is the teacher's position and r^S the
student's rank among the same listed items (both 0-based). The discrepancy weights are

    under-estimated  w^up_j   = tanh(max(ε (r^S_j - r^T_j), 0))
    over-estimated   w^down_j = tanh(max(ε (r^T_j - r^S_j), 0))

so both kinds come from the teacher's list. Each step draws ``n_samples`` items per kind without
replacement with p ∝ w; the under-estimated ones, in teacher order, are the interesting items
of the relaxed ranking loss (RRD) and the over-estimated ones its uninteresting items:

    user side  UCD_s = RRD(under_s ; over_s)                      for each sequence s of the batch
    item side  ICD_i = RRD(under-ranked sequences ; over-ranked)  for each distinct batch target i
    L = (lambda_user · Σ_s UCD_s + lambda_item · Σ_i ICD_i) / B

Item side: the teacher's list of sequences for item i holds the train sequences whose list
contains i, ordered by grounding distance (ascending), at most ``top_n`` of them; the student
ranks them by its score for i. Its scores come from the sequence states cached at the refresh
(no gradient: a sequence outside the batch is not re-encoded), so ICD trains the output layer's
row of i. The released code sums both losses over the batch (as its BPR loss); dividing by the
batch size B keeps λ on that scale next to our mean recommendation loss.
"""
from __future__ import annotations

import torch
from torch import nn

from dllm2rec.distill.base import Batch, DistillContext, DistillMethod, register_method
from dllm2rec.distill.common import SeededSampler, multinomial_masked, teacher_split
from dllm2rec.distill.rrd import relaxed_ranking_loss
from dllm2rec.distill.spec import DCDOptions


def within_list_ranks(scores: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
    """0-based rank of each column by descending score within its row [R, M] (invalid columns,
    if given, rank after every valid one)."""
    if valid is not None:
        scores = scores.masked_fill(~valid, float("-inf"))
    order = scores.argsort(dim=1, descending=True, stable=True)
    ranks = torch.empty_like(order)
    ranks.scatter_(1, order, torch.arange(scores.shape[1], device=scores.device).expand_as(order))
    return ranks


def discrepancy(rs: torch.Tensor, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(w_up, w_down) [R, M] from student ranks ``rs`` within lists whose teacher rank is the column."""
    rt = torch.arange(rs.shape[1], device=rs.device).expand_as(rs)
    diff = (rs - rt).float()
    return torch.tanh((eps * diff).clamp_min(0)), torch.tanh((-eps * diff).clamp_min(0))


@register_method("dcd")
class DCD(DistillMethod):
    Options = DCDOptions

    def __init__(self, cfg: dict, ctx: DistillContext, student: nn.Module):
        super().__init__(cfg, ctx, student)
        o = self.opt
        self.lambda_user, self.lambda_item = float(o.lambda_user), float(o.lambda_item)
        self.n_samples, self.eps = int(o.n_samples), float(o.eps)
        self.refresh_every = max(1, int(o.refresh_every))
        tr = teacher_split(ctx, "train")
        lists = tr.topk_items[:, : int(o.top_n)].long().contiguous()
        dist = tr.topk_dist[:, : lists.shape[1]].float()
        s, n_top = lists.shape
        # item side: for each item, the flat list entries (s * N + position) that name it, by distance
        flat_item, flat_dist = lists.reshape(-1), dist.reshape(-1)
        order = torch.sort(flat_dist, stable=True).indices
        order = order[torch.sort(flat_item[order], stable=True).indices]  # by item, then distance
        counts = torch.bincount(flat_item, minlength=ctx.n_items)
        start = torch.cumsum(counts, 0) - counts
        slot = torch.arange(order.numel()) - start[flat_item[order]]
        keep = slot < n_top
        item_entries = torch.full((ctx.n_items, n_top), -1, dtype=torch.long)
        item_entries[flat_item[order][keep], slot[keep]] = order[keep]
        self.register_buffer("lists", lists, persistent=False)
        self.register_buffer("item_entries", item_entries, persistent=False)
        self.sampler = SeededSampler(ctx.seed, salt=7)
        self.refreshed_at: int | None = None  # epoch of the last refresh
        self.user_rs: torch.Tensor | None = None  # [S, N] student rank within each sequence's list
        self.item_rs: torch.Tensor | None = None  # [n, N] student rank within each item's list of sequences
        self.states: torch.Tensor | None = None  # [S, d] sequence states at the refresh

    # --- refresh (every `refresh_every` epochs) -------------------------------------------
    @torch.no_grad()
    def refresh(self, student, device, chunk: int = 1024) -> None:
        ctx = self.ctx
        was_training = student.training
        student.eval()
        table = self.item_table(student)
        states, list_scores = [], []
        for a in range(0, self.lists.shape[0], chunk):
            h = student.encode(ctx.train_history[a:a + chunk].to(device), ctx.train_lengths[a:a + chunk].to(device), table)
            states.append(h)
            list_scores.append(student.scores(h).gather(1, self.lists[a:a + chunk]))
        student.train(was_training)
        self.states = torch.cat(states)
        sc = torch.cat(list_scores)  # [S, N]
        self.user_rs = within_list_ranks(sc)
        ent = self.item_entries
        valid = ent >= 0
        self.item_rs = within_list_ranks(sc.reshape(-1)[ent.clamp_min(0)], valid)

    def rng_state(self):
        cache = None if self.user_rs is None else {
            "refreshed_at": self.refreshed_at, "user_rs": self.user_rs.cpu(), "item_rs": self.item_rs.cpu(),
            "states": self.states.cpu()}
        return {"sampler": self.sampler.get_state(), "cache": cache}

    def set_rng_state(self, state) -> None:
        if not state:
            return
        self.sampler.set_state(state["sampler"])
        c = state.get("cache")
        if c is not None:
            dev = self.lists.device
            self.refreshed_at = c["refreshed_at"]
            self.user_rs, self.item_rs, self.states = c["user_rs"].to(dev), c["item_rs"].to(dev), c["states"].to(dev)

    # --- sampling and loss ----------------------------------------------------------------
    def sample(self, w_up: torch.Tensor, w_down: torch.Tensor, gen: torch.Generator):
        """Column indices (up in teacher order, up_valid, down, down_valid) [R, n_samples]."""
        up, up_valid = multinomial_masked(w_up, self.n_samples, gen)
        order = up.sort(dim=1)
        up, up_valid = order.values, up_valid.gather(1, order.indices)
        down, down_valid = multinomial_masked(w_down, self.n_samples, gen)
        return up, up_valid, down, down_valid

    def user_loss(self, rows: torch.Tensor, scores: torch.Tensor, gen) -> torch.Tensor:
        """Σ over the batch's sequences of UCD_s."""
        w_up, w_down = discrepancy(self.user_rs[rows], self.eps)
        up, up_valid, down, down_valid = self.sample(w_up, w_down, gen)
        lists = self.lists[rows]
        return relaxed_ranking_loss(scores.gather(1, lists.gather(1, up)), up_valid,
                                    scores.gather(1, lists.gather(1, down)), down_valid).sum()

    def item_loss(self, items: torch.Tensor, student, gen) -> torch.Tensor:
        """Σ over ``items`` of ICD_i, the sequences' cached states scored by the current output layer."""
        ent = self.item_entries[items]
        valid = ent >= 0
        w_up, w_down = discrepancy(self.item_rs[items], self.eps)
        w_up, w_down = w_up * valid, w_down * valid
        up, up_valid, down, down_valid = self.sample(w_up, w_down, gen)
        n_top = self.lists.shape[1]
        w, b = student.out.weight[items], student.out.bias[items]  # [I, d], [I]

        def seq_scores(cols):
            seqs = ent.gather(1, cols).clamp_min(0) // n_top
            return (self.states[seqs] * w.unsqueeze(1)).sum(-1) + b.unsqueeze(1)

        return relaxed_ranking_loss(seq_scores(up), up_valid, seq_scores(down), down_valid).sum()

    def loss(self, batch: Batch, scores, state, student, epoch: int) -> torch.Tensor:
        dev = scores.device
        if self.user_rs is None or (epoch % self.refresh_every == 0 and self.refreshed_at != epoch):
            self.refresh(student, dev)
            self.refreshed_at = epoch
        gen = self.sampler(dev)
        rows = batch.rows.to(dev)
        total = self.lambda_user * self.user_loss(rows, scores, gen)
        if self.lambda_item:
            items = torch.unique(batch.target.to(dev))
            total = total + self.lambda_item * self.item_loss(items, student, gen)
        return total / rows.numel()
