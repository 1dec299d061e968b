"""DLLM2Rec (paper §3.2, docs/method.md §4): importance-aware ranking distillation + collaborative
embedding distillation. ``L = L_r (+ α L_DRO for DROS) + λ_d L_d``; this module returns λ_d L_d
and supplies the enriched input table e_i = b_i + ω g(z_i).

Ranking term, with the teacher's top-K candidates c_1..c_K of each train sequence (rank r = 1..K).
The teacher artifacts store *squared* L2 grounding distances (``target_dist``, ``topk_dist``;
docs/teacher.md). Each weight is put on one scale in both variants: its row sum over the K
candidates is at most 1 (w^p: 1; ``paper``'s w^c: 1 on average over the train sequences;
``paper``'s w^o: 1 for a row whose K candidates all overlap).

* position    w^p_r  = exp(-r/β) / Σ_r' exp(-r'/β)                                (both variants)
* confidence  ``paper``:    w^c_sk = c_s / K,  c_s = exp(-(d_s/median_train(d))/β) scaled to mean 1
                            over the train sequences (d_s = target_dist, the squared distance of
                            Eq. 7; one weight per sequence, shared by its K candidates)
              ``official``: w^c_sk = (exp(-√d_{s,c_k}) + 1e-8) / Σ_k (...): the candidate's own
                            *plain* L2 distance, as the released code reads BIGRec's
                            ``torch.cdist(p=2)`` distances (istarryn/DLLM2Rec main.py,
                            ``confidence_train.txt``; SAI990323/BIGRec data/*/evaluate.py)
* consistency o_sk = [c_k in the student's top-K of this same forward pass] (no gradient);
              ``paper``:    w^o_sk = o_sk / K: Eq. 8's 0/1 indicator, on the scale of the other
                            two terms (a row whose K candidates all overlap sums to 1, as w^p's
                            rows and w^c's on average do); every overlapping candidate weighs
                            the same whatever the row's overlap count
              ``official``: w^o_sk = o_sk + 1e-8, as released (istarryn/DLLM2Rec main.py:
                            ``common_tensor = common_mask.any(dim=2).int() + 1e-8``; the raw
                            indicator enters ``weight_fin = gamma_position*weight_rank +
                            gamma_confidence*weight_confidence + gamma_consistency*weight_com``,
                            then ``weight = weight_fin / torch.sum(weight_fin, dim=1)``)
* w = γ_p w^p + γ_c w^c + γ_o w^o;  ``official`` renormalises each row to sum 1 (as released).
  ``paper`` keeps Eq. 10 unnormalised, so removing one weight (Table 7) removes its share of the
  loss without rescaling the others, and the γ's weigh terms of equal size as in the released
  code.
* ``paper``    (Eq. 5): L_d = mean_s Σ_k w_sk · (-log σ(ŷ_{s,c_k}))
  ``official``:         L_d = Σ_k mean_s w_sk · (-log σ(ŷ_{s,c_k}) - log σ(1 - ŷ_{s,neg}))
                              + [DROS] α Σ_k mean_s(w_sk) · mean_s L_DRO(s, c_k)
  (the released broadcasting: its DRO term is mean(w)·mean(L_DRO); -log σ(1 - ŷ_neg) is sic).
  Eq. 5 sums over sequences; both variants average over the batch as L_r does, so λ_d keeps the
  released code's scale.

Embedding term (Eqs. 12-13): e_i = b_i + ω g(z_i) with b_i the student's own ID embedding
(``offset``), g = ``projector`` (``linear``: Linear(d_t, hidden) as released; ``mlp``:
Linear(d_t, hidden) -> ReLU -> Linear(hidden, hidden)), ω = ``ed_weight``. ``offset: false`` gives
e_i = g(z_i). The table feeds the history only; scoring stays on the student's output layer.

Ablations (Tables 7, 8): ``ranking: false`` drops L_d, ``use_wp/use_wc/use_wo: false`` drop a
weight, ``embedding: false`` drops the embedding term, ``embedding_method: hint|htd`` replaces it
with that baseline's embedding distillation loss (its options are the baseline's defaults,
docs/methods.md).
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from dllm2rec.distill.base import Batch, DistillContext, DistillMethod, get_method, register_method
from dllm2rec.distill.common import distinct_items
from dllm2rec.distill.spec import DLLM2RecOptions
from dllm2rec.io import UserError


def position_weight(k: int, beta: float) -> torch.Tensor:
    """w^p over ranks 1..k: exp(-r/β) normalised to sum 1. [k]"""
    return torch.softmax(-torch.arange(1, k + 1, dtype=torch.float32) / beta, 0)


def paper_confidence(target_dist: torch.Tensor, beta: float) -> torch.Tensor:
    """Per-sequence w^c (paper): exp(-(d/median(d))/β) over the train sequences, scaled to mean 1. [S]"""
    d = target_dist.detach().cpu().to(torch.float64)
    d = torch.where(torch.isfinite(d), d, d[torch.isfinite(d)].max() if torch.isfinite(d).any() else torch.zeros(()))
    med = float(np.median(d.numpy())) if len(d) else 1.0  # the usual median (mean of the middle two)
    med = med if med > 0 else 1.0
    w = torch.exp(-(d / med) / beta)
    return (w / w.mean().clamp_min(1e-300)).to(torch.float32)


def official_confidence(topk_dist: torch.Tensor) -> torch.Tensor:
    """Per-candidate w^c (official) from *squared* distances [S, K]: exp(-√d) + 1e-8, normalised
    over the K candidates (the released code applies exp(-d) to plain L2 distances)."""
    w = torch.exp(-topk_dist.to(torch.float32).clamp_min(0).sqrt()) + 1e-8
    return w / w.sum(1, keepdim=True)


def consistency_weight(candidates: torch.Tensor, scores: torch.Tensor, k: int) -> torch.Tensor:
    """o: 1 where the candidate is in the student's top-k (``scores``, no gradient), else 0. [B, K]"""
    top = scores.detach().topk(k, dim=1).indices  # [B, k]
    return (candidates.unsqueeze(2) == top.unsqueeze(1)).any(2).to(scores.dtype)


def paper_consistency(o: torch.Tensor, k: int) -> torch.Tensor:
    """w^o (paper, Eq. 8): the 0/1 overlap indicator ``o`` [B, K] divided by the constant K, so a
    fully overlapping row sums to 1 like the other two terms; not normalised per row."""
    return o / k


def official_consistency(o: torch.Tensor) -> torch.Tensor:
    """w^o (official): the raw indicator + 1e-8 (istarryn/DLLM2Rec main.py ``common_tensor``)."""
    return o + 1e-8


def combine_weights(wp, wc, wo, gamma_p: float, gamma_c: float, gamma_o: float, renormalise: bool) -> torch.Tensor:
    """w = γ_p w^p + γ_c w^c + γ_o w^o (broadcast to [B, K]); ``renormalise``: rows sum to 1."""
    w = gamma_p * wp + gamma_c * wc + gamma_o * wo
    if renormalise:
        w = w / w.sum(1, keepdim=True).clamp_min(1e-30)
    return w


def paper_ranking_loss(cand_scores: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """Eq. 5, batch mean: mean_s Σ_k w_sk · (-log σ(ŷ_{s,c_k}))."""
    return (w * F.softplus(-cand_scores)).sum(1).mean()


def official_ranking_loss(cand_scores: torch.Tensor, neg_scores: torch.Tensor, w: torch.Tensor,
                          dro: torch.Tensor | None = None, alpha: float = 0.0) -> torch.Tensor:
    """Released form: Σ_k mean_s w_sk(-log σ(ŷ_c) - log σ(1 - ŷ_neg)) [+ α Σ_k mean(w_k)·mean(L_DRO_k)].
    cand_scores, w, dro: [B, K]; neg_scores [B]."""
    per = F.softplus(-cand_scores) + F.softplus(-(1.0 - neg_scores)).unsqueeze(1)
    loss = (w * per).mean(0).sum()
    if dro is not None and alpha:
        loss = loss + alpha * (w.mean(0) * dro.mean(0)).sum()
    return loss


@register_method("dllm2rec")
class DLLM2Rec(DistillMethod):
    Options = DLLM2RecOptions

    def __init__(self, cfg: dict, ctx: DistillContext, student: nn.Module):
        super().__init__(cfg, ctx, student)
        c = self.opt
        self.variant = c.variant
        # a buffer, so that the members of a fused group each weigh L_d by their own lambda_d
        self.register_buffer("lambda_d", torch.tensor(float(c.lambda_d)), persistent=False)
        self.k = c.k
        self.beta = c.beta
        self.gamma_p = c.gamma_p if c.use_wp else 0.0
        self.gamma_c = c.gamma_c if c.use_wc else 0.0
        self.gamma_o = c.gamma_o if c.use_wo else 0.0
        self.use_ranking = c.ranking
        self.use_embedding = c.embedding and c.embedding_method == "collaborative"
        self.offset = c.offset
        self.ed_weight = c.ed_weight
        teacher = ctx.teacher
        if (self.use_ranking or self.use_embedding) and teacher is None:
            raise UserError("method dllm2rec needs a teacher: pass the teacher directory")
        if self.use_ranking:
            tr = teacher.splits.get("train")
            if tr is None or tr.topk_items.shape[1] < self.k:
                have = None if tr is None else tr.topk_items.shape[1]
                raise UserError(f"dllm2rec: k={self.k} but the teacher's train ranks list {have} items per sequence")
            self.register_buffer("cand", tr.topk_items[:, : self.k].long().contiguous(), persistent=False)
            self.register_buffer("w_p", position_weight(self.k, self.beta), persistent=False)
            conf = paper_confidence(tr.target_dist, self.beta) if self.variant == "paper" \
                else official_confidence(tr.topk_dist[:, : self.k])
            self.register_buffer("w_c", conf, persistent=False)
        if self.use_embedding:
            z = teacher.item_emb
            if z.shape[0] != ctx.n_items:
                raise UserError(f"dllm2rec: teacher item embeddings have {z.shape[0]} rows, the dataset {ctx.n_items} items")
            self.register_buffer("z", z.float().contiguous(), persistent=False)
            width, hidden = z.shape[1], ctx.hidden
            self.projector = nn.Linear(width, hidden) if c.projector == "linear" else \
                nn.Sequential(nn.Linear(width, hidden), nn.ReLU(), nn.Linear(hidden, hidden))
        # Table 8: the embedding term swapped for an existing embedding distillation (Hint or HTD)
        self.embedding_kd = None
        if c.embedding and c.embedding_method != "collaborative":
            name = c.embedding_method
            self.embedding_kd = get_method(name)({"type": name}, ctx, student)

    # --- collaborative embedding distillation ---------------------------------------------
    def item_table(self, student) -> torch.Tensor:
        base = student.item_emb.weight
        if not self.use_embedding:
            return base
        proj = torch.cat([self.projector(self.z), base.new_zeros(1, base.shape[1])])  # padding row 0
        return base + self.ed_weight * proj if self.offset else proj

    def item_table_for(self, student, history: torch.Tensor) -> torch.Tensor:
        """On a CPU, only the batch's distinct history items are projected (about 1,100 of ml-100k's
        1,682 per batch: the projector is most of a step's cost there). On a GPU the whole table
        is projected, which is cheap there and needs no ``torch.unique``, whose output size would
        have to be read back to the host every step. The rows the history indexes are the same."""
        base = student.item_emb.weight
        if not self.use_embedding:
            return base
        if self.batch_items is not None:  # fused training: the group's batch items, found outside vmap
            used = self.batch_items
        elif history.device.type != "cpu":
            return self.item_table(student)
        else:
            used = distinct_items(history, self.ctx.n_items)
        proj = self.projector(self.z[used])
        if self.offset:
            return base.index_add(0, used, proj, alpha=self.ed_weight)
        return base.new_zeros(base.shape).index_copy(0, used, proj)

    # --- importance-aware ranking distillation --------------------------------------------
    def weights(self, rows: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        cand = self.cand[rows]
        o = consistency_weight(cand, scores, self.k)
        if self.variant == "paper":  # every term's row sum is 1 (w^c: on average), see the module docstring
            return combine_weights(self.w_p.unsqueeze(0), self.w_c[rows].unsqueeze(1) / self.k, paper_consistency(o, self.k),
                                   self.gamma_p, self.gamma_c, self.gamma_o, renormalise=False)
        return combine_weights(self.w_p.unsqueeze(0), self.w_c[rows], official_consistency(o),
                               self.gamma_p, self.gamma_c, self.gamma_o, renormalise=True)

    def loss(self, batch: Batch, scores: torch.Tensor, state: torch.Tensor, student, epoch: int) -> torch.Tensor:
        if batch.split != "train":
            return scores.new_zeros(())
        extra = self.embedding_kd.loss(batch, scores, state, student, epoch) if self.embedding_kd is not None else 0.0
        if not self.use_ranking:
            return scores.new_zeros(()) + extra
        cand = self.cand[batch.rows]
        w = self.weights(batch.rows, scores)
        cand_scores = scores.gather(1, cand)
        if self.variant == "paper":
            ld = paper_ranking_loss(cand_scores, w)
        else:
            neg = scores.gather(1, batch.negative.view(-1, 1)).squeeze(1)
            alpha = float(getattr(student, "alpha", 0.0) or 0.0) if hasattr(student, "dro") else 0.0
            dro = student.dro(scores, cand) if alpha else None
            ld = official_ranking_loss(cand_scores, neg, w, dro, alpha)
        return self.lambda_d * ld + extra
