"""Hint (FitNets, Romero et al. ICLR 2015) as an item-embedding distillation baseline.

FitNets puts a learnable *regressor* on the student's guided layer and pulls its output towards
the teacher's hint layer with an L2 loss, so the projection goes student -> teacher (the teacher
side is fixed). Here the guided layer is the student's item ID embedding table and the hint is
the teacher's title embedding z_i of the same item (docs/methods.md, "Hint").
"""
from __future__ import annotations

import torch
from torch import nn

from dllm2rec.distill.base import Batch, DistillContext, DistillMethod, register_method
from dllm2rec.distill.common import batch_items, make_projector, standardize, teacher_item_emb
from dllm2rec.distill.spec import HintOptions


@register_method("hint")
class Hint(DistillMethod):
    """L = lambda_kd * mean_{i in I_B} (1/d_t) || r(e_i) - z~_i ||^2.

    e_i: the student's item ID embedding (``student.item_emb``), r: the FitNets regressor
    (hidden -> d_t), z~_i: the teacher's title embedding (standardised per dimension when
    ``normalize``), I_B: the distinct items of the batch (``items: batch``) or all items.
    """

    Options = HintOptions

    def __init__(self, cfg: dict, ctx: DistillContext, student: nn.Module):
        super().__init__(cfg, ctx, student)
        self.lambda_kd = self.opt.lambda_kd
        self.items = self.opt.items
        z = teacher_item_emb(ctx)
        if self.opt.normalize:
            z = standardize(z)
        self.register_buffer("z", z, persistent=False)
        self.regressor = make_projector(self.opt.projector, ctx.hidden, z.shape[1])

    def loss(self, batch: Batch, scores, state, student, epoch: int) -> torch.Tensor:
        n = self.ctx.n_items
        if self.items == "all":
            items = torch.arange(n, device=self.z.device)
        else:
            items = batch_items(batch, n).to(self.z.device)
        e = student.item_emb.weight[items]
        diff = self.regressor(e) - self.z[items]
        return self.lambda_kd * diff.pow(2).mean()
