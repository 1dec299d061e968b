"""Hint (FitNets, Romero et al. ICLR 2015) as an item-embedding distillation baseline.

FitNets puts a learnable *regressor* on the student's guided layer and pulls its output towards
the teacher's hint layer with an L2 loss, so the projection goes student -> teacher (the teacher
side is fixed). Here the guided layer is the student's item ID embedding table and the hint is
the teacher's title embedding z_i of the same item (docs/methods.md, "Hint").

Also holds the small helpers the other embedding-based baselines share (HTD, KAR, LLM-CF).
"""
from __future__ import annotations

import torch
from torch import nn

from dllm2rec.io import UserError
from dllm2rec.distill.base import Batch, DistillContext, DistillMethod, distinct_items, register_method


def standardize(x: torch.Tensor, ref: torch.Tensor | None = None) -> torch.Tensor:
    """Per-dimension z-score of ``x`` with the mean/std of ``ref`` (``x`` itself when None).

    LLM last-token hidden states are strongly anisotropic (a few huge "massive activation"
    dimensions, all cosines close to 1); centring and scaling each dimension over the item
    table puts them on a common scale for regression targets, cosines and MLP inputs.
    """
    ref = x if ref is None else ref
    ref = ref.float()
    mean = ref.mean(0, keepdim=True)
    std = ref.std(0, keepdim=True, unbiased=False).clamp_min(1e-6)
    return (x.float() - mean) / std


def batch_items(batch: Batch, n_items: int) -> torch.Tensor:
    """Sorted unique real item ids of a batch: history (padding dropped), target and negative."""
    parts = [batch.history.reshape(-1), batch.target.reshape(-1)]
    if batch.negative is not None:
        parts.append(batch.negative.reshape(-1))
    return distinct_items(torch.cat(parts), n_items)


def make_projector(kind: str, d_in: int, d_out: int) -> nn.Module:
    if kind == "linear":
        return nn.Linear(d_in, d_out)
    if kind == "mlp":
        return nn.Sequential(nn.Linear(d_in, d_in * 2), nn.ReLU(), nn.Linear(d_in * 2, d_out))
    raise UserError(f"projector must be linear or mlp, got {kind!r}")


def teacher_item_emb(ctx: DistillContext) -> torch.Tensor:
    if ctx.teacher is None or ctx.teacher.item_emb is None:
        raise UserError("this method needs the teacher's item embeddings")
    z = ctx.teacher.item_emb.float()
    if z.shape[0] != ctx.n_items:
        raise UserError(f"teacher item_emb has {z.shape[0]} rows, expected n_items={ctx.n_items}")
    return z


@register_method("hint")
class Hint(DistillMethod):
    """L = lambda_kd * mean_{i in I_B} (1/d_t) || r(e_i) - z~_i ||^2.

    e_i: the student's item ID embedding (``student.item_emb``), r: the FitNets regressor
    (hidden -> d_t), z~_i: the teacher's title embedding (standardised per dimension when
    ``normalize``), I_B: the distinct items of the batch (``items: batch``) or all items.
    """

    needs = frozenset({"item_embeddings"})

    def __init__(self, cfg: dict, ctx: DistillContext, student: nn.Module):
        super().__init__(cfg, ctx, student)
        self.lambda_kd = float(self.cfg.get("lambda_kd", 0.1))
        self.items = str(self.cfg.get("items", "batch"))
        if self.items not in ("batch", "all"):
            raise UserError("hint.items must be batch or all")
        z = teacher_item_emb(ctx)
        if bool(self.cfg.get("normalize", True)):
            z = standardize(z)
        self.register_buffer("z", z, persistent=False)
        self.regressor = make_projector(str(self.cfg.get("projector", "linear")), ctx.hidden, z.shape[1])

    def loss(self, batch: Batch, scores, state, student, epoch: int) -> torch.Tensor:
        n = self.ctx.n_items
        if self.items == "all":
            items = torch.arange(n, device=self.z.device)
        else:
            items = batch_items(batch, n).to(self.z.device)
        e = student.item_emb.weight[items]
        diff = self.regressor(e) - self.z[items]
        return self.lambda_kd * diff.pow(2).mean()
