"""KAR (Xi et al. 2023, "Towards Open-World Recommendation with Knowledge Augmentation from LLMs").

KAR encodes LLM-generated knowledge (item "factual" knowledge, user "reasoning" knowledge)
with a text encoder and maps it into the recommender through a hybrid-expert adaptor: shared
experts used by both knowledge kinds plus experts specific to each kind, mixed by a per-kind
softmax gate. Here the two knowledge vectors are the teacher artifacts:
- item side: the title embedding z_i (standardised) -> x_i = HEA_item(z_i), added to the
  student's input item embeddings: table_i = e_i + x_i (the padding row gets nothing);
- sequence side: the embedding of the teacher's generated text for the sequence, g_s
  (standardised with the item table's statistics, same encoder) -> x_s = HEA_seq(g_s), added
  to the sequence representation: h'_s = h_s + x_s.

HEA_d(v) = Σ_{e ∈ shared ∪ specific_d} softmax(W_d v)_e · E_e(v), E_e an MLP d_t -> h_e -> d.
No distillation loss; the adaptor trains with the student's own loss. g_s is needed for every
evaluated sequence, so the teacher runs at inference.
"""
from __future__ import annotations

import torch
from torch import nn

from dllm2rec.io import UserError
from dllm2rec.distill.base import Batch, DistillContext, DistillMethod, register_method
from dllm2rec.distill.common import distinct_items, standardize, teacher_item_emb, teacher_split
from dllm2rec.distill.spec import KAROptions


class Expert(nn.Module):
    def __init__(self, d_in: int, d_hidden: int, d_out: int, dropout: float):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(d_in, d_hidden), nn.ReLU(), nn.Dropout(dropout), nn.Linear(d_hidden, d_out))

    def forward(self, x):
        return self.net(x)


class HybridExpertAdaptor(nn.Module):
    """Shared experts + one set of specific experts per domain, with a softmax gate per domain."""

    def __init__(self, d_in: int, d_out: int, domains: tuple[str, ...], n_shared: int, n_specific: int, d_hidden: int, dropout: float):
        super().__init__()
        self.shared = nn.ModuleList(Expert(d_in, d_hidden, d_out, dropout) for _ in range(n_shared))
        self.specific = nn.ModuleDict({d: nn.ModuleList(Expert(d_in, d_hidden, d_out, dropout) for _ in range(n_specific)) for d in domains})
        self.gate = nn.ModuleDict({d: nn.Linear(d_in, n_shared + n_specific) for d in domains})

    def forward(self, x: torch.Tensor, domain: str) -> torch.Tensor:
        experts = list(self.shared) + list(self.specific[domain])
        out = torch.stack([e(x) for e in experts], dim=-2)  # [.., E, d_out] (loop over experts, not rows)
        gate = torch.softmax(self.gate[domain](x), dim=-1)  # [.., E]
        return (gate.unsqueeze(-1) * out).sum(-2)


@register_method("kar")
class KAR(DistillMethod):
    Options = KAROptions

    def __init__(self, cfg: dict, ctx: DistillContext, student: nn.Module):
        super().__init__(cfg, ctx, student)
        z_raw = teacher_item_emb(ctx)
        ref = z_raw.clone()
        self.register_buffer("ref_mean", ref.mean(0, keepdim=True), persistent=False)
        self.register_buffer("ref_std", ref.std(0, keepdim=True, unbiased=False).clamp_min(1e-6), persistent=False)
        self.register_buffer("z", standardize(z_raw), persistent=False)
        self.augment_items = self.opt.augment_items
        self.augment_sequence = self.opt.augment_sequence
        self.adaptor = HybridExpertAdaptor(
            z_raw.shape[1], ctx.hidden, ("item", "seq"),
            n_shared=self.opt.n_shared,
            n_specific=self.opt.n_specific,
            d_hidden=self.opt.expert_hidden,
            dropout=self.opt.dropout,
        )

    def item_table(self, student) -> torch.Tensor:
        base = student.item_emb.weight
        if not self.augment_items:
            return base
        x = self.adaptor(self.z, "item")
        return base + torch.cat([x, x.new_zeros(1, x.shape[1])], 0)

    def item_table_for(self, student, history: torch.Tensor) -> torch.Tensor:
        """Training: run the adaptor on the batch's history items only (the rows encode reads)."""
        base = student.item_emb.weight
        if not self.augment_items:
            return base
        items = distinct_items(history, self.ctx.n_items)
        x = self.adaptor(self.z[items], "item")
        return base.index_add(0, items, x.to(base.dtype))

    def sequence_knowledge(self, batch: Batch) -> torch.Tensor:
        sp = teacher_split(self.ctx, batch.split)
        if sp.gen_emb is None:
            raise UserError(f"KAR needs the generated-text embeddings of split {batch.split!r}")
        g = sp.gen_emb[batch.rows.to(sp.gen_emb.device)].to(self.z.device).float()
        return (g - self.ref_mean) / self.ref_std

    def adjust_state(self, state: torch.Tensor, batch: Batch) -> torch.Tensor:
        if not self.augment_sequence:
            return state
        return state + self.adaptor(self.sequence_knowledge(batch), "seq").to(state.dtype)
