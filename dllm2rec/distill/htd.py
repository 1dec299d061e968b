"""Hierarchical Topology Distillation (HTD, Kang et al. KDD 2021), as in
SeongKu-Kang/Topology_Distillation_KDD21 (``model.py`` class ``HTD``, ``run.py`` ``run_HTD``, the
notebook's settings).

The student learns the *topology* (cosine similarities) of the teacher's representation space,
decomposed by groups that the teacher's space is split into:

- group assignment (GA): K expert projectors f_k (Linear-ReLU-Linear, student width → teacher
  width) and a softmax assigner v on the teacher embedding; with a Gumbel-softmax sample
  a = softmax((log v(t) + g) / τ),  GA = Σ_e ‖ t_e − Σ_k a_ek f_k(s_e) ‖²;  τ is annealed per
  epoch, τ = 1 · (1e-10)^(epoch / epochs) (``run.py`` ``T_annealing``);
- topology (TD), entities grouped by argmax_k v(t): entity level Σ over same-group pairs with a
  positive teacher cosine of (cos_S − cos_T)²; group level (the released "second" choice,
  prototype-to-entity) Σ over (group present in the batch, entity) of
  (cos(P^S_g, s_e) − cos(P^T_g, t_e))², prototypes P = the group's batch mean (no gradient);

    L = lambda_kd · ( α · TD + (1 − α) · GA ) / B

Entities are the batch's distinct target and negative items (the released code: its positive
and negative items); the student side is the item ID embedding, the teacher side the
standardised title embedding scaled to unit mean squared norm (1/sqrt(d_t)): GA is a sum of
squares, and a standardised LLM embedding has a squared norm of d_t (cosines are unaffected).
``teacher_dim`` (ours, for cost) first projects it on its top principal directions: the K
experts' output layer is K x (d_t+64)/2 x d_t, which on a CPU costs seconds per step for an LLM's
width; the released code's teacher is a 200-dim BPR.
The released code sums the loss (and its BPR loss) over the batch; dividing by the batch size B
keeps λ on that scale next to our mean recommendation loss.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from dllm2rec.distill.base import Batch, DistillContext, DistillMethod, register_method
from dllm2rec.distill.common import SeededSampler, distinct_items, standardize, teacher_item_emb
from dllm2rec.distill.spec import HTDOptions


def teacher_space(z: torch.Tensor, dim: int | None) -> torch.Tensor:
    """Standardised teacher embeddings, projected on their top ``dim`` principal directions when
    ``dim`` > 0 (and smaller than the width), scaled to unit mean squared norm."""
    x = standardize(z)
    if 0 < dim < x.shape[1]:
        cov = x.T.double() @ x.double() / x.shape[0]
        _, vecs = torch.linalg.eigh(cov)  # ascending eigenvalues
        x = (x.double() @ vecs[:, -int(dim):].flip(1)).float()
    return x / x.pow(2).sum(1).mean().sqrt().clamp_min(1e-12)


def cosine(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return F.normalize(a, dim=1) @ F.normalize(b, dim=1).T


class Experts(nn.Module):
    """K projectors f_k(x) = W2_k relu(W1_k x + b1_k) + b2_k (each nn.Linear-initialised) and
    their mixture Σ_k a_k f_k(x), computed as two wide matrix products."""

    def __init__(self, k: int, d_in: int, d_hidden: int, d_out: int):
        super().__init__()
        self.k, self.d_hidden = k, d_hidden
        self.w1 = nn.Parameter(torch.empty(d_in, k * d_hidden))
        self.b1 = nn.Parameter(torch.empty(k * d_hidden))
        self.w2 = nn.Parameter(torch.empty(k * d_hidden, d_out))
        self.b2 = nn.Parameter(torch.empty(k, d_out))
        for w, b, fan_in in ((self.w1, self.b1, d_in), (self.w2, self.b2, d_hidden)):
            bound = 1 / math.sqrt(fan_in)
            nn.init.uniform_(w, -bound, bound)
            nn.init.uniform_(b, -bound, bound)

    def expert(self, x: torch.Tensor, k: int) -> torch.Tensor:
        """f_k(x) [E, d_out] (for tests)."""
        sl = slice(k * self.d_hidden, (k + 1) * self.d_hidden)
        return torch.relu(x @ self.w1[:, sl] + self.b1[sl]) @ self.w2[sl] + self.b2[k]

    def mix(self, x: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        """Σ_k a_ek f_k(x_e): x [E, d_in], a [E, K] -> [E, d_out]."""
        h = torch.relu(x @ self.w1 + self.b1).view(x.shape[0], self.k, self.d_hidden)
        return (h * a.unsqueeze(-1)).reshape(x.shape[0], -1) @ self.w2 + a @ self.b2


@register_method("htd")
class HTD(DistillMethod):
    Options = HTDOptions

    def __init__(self, cfg: dict, ctx: DistillContext, student: nn.Module):
        super().__init__(cfg, ctx, student)
        o = self.opt
        self.lambda_kd, self.alpha, self.k = float(o.lambda_kd), float(o.alpha), int(o.n_groups)
        self.tau_start, self.tau_end = float(o.tau_start), float(o.tau_end)
        t = teacher_space(teacher_item_emb(ctx), o.teacher_dim)
        d_t, d_s = t.shape[1], ctx.hidden
        self.register_buffer("t", t, persistent=False)
        self.experts = Experts(self.k, d_s, (d_t + d_s) // 2, d_t)
        self.assigner = nn.Linear(d_t, self.k)  # v, followed by a softmax
        self.sampler = SeededSampler(ctx.seed, salt=13)
        self.sampler("cpu")  # created now, so that rng_state() restores the first draws too

    def tau(self, epoch: int) -> float:
        """run.py: T_annealing after each epoch, floored at the end value."""
        if epoch <= 0:
            return self.tau_start
        frac = (epoch - 1) / max(self.ctx.max_epochs, 1)
        return max(self.tau_start * (self.tau_end / self.tau_start) ** frac, self.tau_end)

    def ga_loss(self, s: torch.Tensor, t: torch.Tensor, tau: float, gen) -> torch.Tensor:
        probs = torch.softmax(self.assigner(t), dim=1)
        u = torch.rand(probs.shape, device=probs.device, generator=gen)
        gumbel = -torch.log((-torch.log(u.clamp(1e-20, 1.0))).clamp_min(1e-20))  # Gumbel(0, 1)
        a = torch.softmax((torch.log(probs + 1e-10) + gumbel) / tau, dim=1)  # [E, K]
        f_hat = self.experts.mix(s, a)
        return (t - f_hat).pow(2).sum()

    def td_loss(self, s: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            grp = self.assigner(t).argmax(1)
            onehot = F.one_hot(grp, self.k).float()  # [E, K]
            present = onehot.sum(0) > 0
            mean = (onehot / onehot.sum(0, keepdim=True).clamp_min(1e-10)).T[present]  # [G', E]
            p_s, p_t = mean @ s, mean @ t
        same = grp.unsqueeze(0) == grp.unsqueeze(1)
        c_t = cosine(t, t)
        keep = same & (c_t > 0)
        entity = torch.where(keep, cosine(s, s) - c_t, torch.zeros_like(c_t)).pow(2).sum()
        group = (cosine(p_s, s) - cosine(p_t, t)).pow(2).sum()
        return entity + group

    def loss(self, batch: Batch, scores, state, student, epoch: int) -> torch.Tensor:
        parts = [batch.target.reshape(-1)] + ([batch.negative.reshape(-1)] if batch.negative is not None else [])
        items = distinct_items(torch.cat(parts), self.ctx.n_items).to(self.t.device)
        s = student.item_emb.weight[items]
        t = self.t[items]
        gen = self.sampler(t.device)
        htd = self.alpha * self.td_loss(s, t) + (1 - self.alpha) * self.ga_loss(s, t, self.tau(epoch), gen)
        return self.lambda_kd * htd / batch.rows.numel()
