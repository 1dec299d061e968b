"""KAR (Xi et al. 2023, "Towards Open-World Recommendation with Knowledge Augmentation from LLMs").

KAR asks an LLM for knowledge about the user (reasoning over the user's history) and about the
candidate item (factual knowledge), encodes both texts with a text encoder, and maps the two
vectors into the recommender with a hybrid-expert adaptor (HEA); the adapted vectors are extra
features of the scoring model next to the candidate item's and the user's embeddings
(``RS/models.py`` of YunjiaXi/Open-World-Knowledge-Augmented-Recommendation: ``process_input``
feeds ``hist_aug_vec`` and the candidate's ``item_aug_vec`` through ``ConvertNet`` and
concatenates the result to the CTR model's input).

Here (docs/methods.md, "KAR"):
- knowledge: one text per user and one per item, written once by the teacher's base LLM from the
  user's **training** interactions and from the item's title (:mod:`dllm2rec.teacher.knowledge`,
  KAR's prompts), embedded by the text encoder all-MiniLM-L6-v2 (KAR: BERT). k_s is the vector
  of the sequence's user (zeros for a user without training interactions), k_i the item's (zeros
  for an item outside the splits). Nothing KAR reads is a teacher prediction for a sequence;
- HEA (``RS/layers.py`` ``HEA``): for domain d in {user, item},
  HEA_d(v) = Σ_{e ∈ shared ∪ specific_d} softmax(W_d v + b_d)_e · E_e(v), every expert E_e the
  KAR MLP ``[expert_hidden, hidden]``: Linear, ReLU, Dropout per layer (so it ends with ReLU);
- the student scores a full catalogue with a dot product, so the features enter by addition on
  both sides: h'_s = h_s + HEA_user(k_s) and score(s, i) = out(h'_s)_i + h'_s · HEA_item(k_i),
  i.e. the candidate item's knowledge reaches the score (our adaptation of KAR's concatenation
  into an MLP, which a full-catalogue ranking cannot afford).

No distillation loss; the adaptor trains with the student's own loss. During training only the
scores the loss reads (each row's target and negative) get the item term. Every evaluated
sequence reads its user's knowledge vector (``uses_teacher_at_inference``), a fixed per-user
table as in KAR's deployment.
"""
from __future__ import annotations

import torch
from torch import nn

from dllm2rec.distill.base import Batch, DistillContext, DistillMethod, register_method
from dllm2rec.distill.common import distinct_items
from dllm2rec.distill.common import teacher_split
from dllm2rec.distill.spec import KAROptions
from dllm2rec.io import UserError


class Expert(nn.Module):
    """KAR's expert ``MLP(fc_dims)``: Linear, ReLU, Dropout for every layer (ends with ReLU)."""

    def __init__(self, d_in: int, dims: tuple[int, ...], dropout: float):
        super().__init__()
        layers: list[nn.Module] = []
        for d in dims:
            layers += [nn.Linear(d_in, d), nn.ReLU(), nn.Dropout(dropout)]
            d_in = d
        self.net = nn.Sequential(*layers)

    def forward(self, x):
        return self.net(x)


class HybridExpertAdaptor(nn.Module):
    """Shared experts + one set of specific experts per domain, with a softmax gate per domain."""

    def __init__(self, d_in: int, dims: tuple[int, ...], domains: tuple[str, ...], n_shared: int, n_specific: int,
                 dropout: float):
        super().__init__()
        self.shared = nn.ModuleList(Expert(d_in, dims, dropout) for _ in range(n_shared))
        self.specific = nn.ModuleDict({d: nn.ModuleList(Expert(d_in, dims, dropout) for _ in range(n_specific)) for d in domains})
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
        o = self.opt
        items = None if ctx.teacher is None else ctx.teacher.knowledge_item_emb
        if items is None or items.shape[0] != ctx.n_items:
            raise UserError(f"kar needs KAR's item knowledge vectors for the {ctx.n_items} items (made by the "
                            "knowledge_embeddings rule): pass the teacher folder that holds them")
        self.register_buffer("k_items", items.float(), persistent=False)
        self.adaptor = HybridExpertAdaptor(items.shape[1], (o.expert_hidden, ctx.hidden), ("user", "item"),
                                           n_shared=o.n_shared, n_specific=o.n_specific, dropout=o.dropout)
        self._eval_items: torch.Tensor | None = None  # HEA_item of every item, cached in eval mode

    def train(self, mode: bool = True):
        self._eval_items = None
        return super().train(mode)

    def user_knowledge(self, batch: Batch) -> torch.Tensor:
        """k_s: the knowledge vector of each batch row's user [B, d_e] (never a teacher prediction)."""
        k = teacher_split(self.ctx, batch.split).knowledge_user_emb
        if k is None:
            raise UserError(f"kar needs KAR's user knowledge vectors of split {batch.split!r} (made by the "
                            "knowledge_embeddings rule)")
        return k[batch.rows.to(k.device)].float().to(self.k_items.device)

    def adjust_state(self, state: torch.Tensor, batch: Batch) -> torch.Tensor:
        if not self.opt.augment_user:
            return state
        return state + self.adaptor(self.user_knowledge(batch), "user").to(state.dtype)

    def item_knowledge(self, items: torch.Tensor | None = None) -> torch.Tensor:
        """HEA_item(k_i) for ``items`` (all items when None) -> [m, hidden]."""
        k = self.k_items if items is None else self.k_items[items]
        return self.adaptor(k, "item")

    def scores(self, student, state: torch.Tensor, batch: Batch) -> torch.Tensor:
        scores = student.scores(state)
        if not self.opt.augment_items:
            return scores
        if self.training and batch.negative is not None:
            # the training loss reads each row's target and negative: add the term to those columns
            cols = distinct_items(torch.cat([batch.target.reshape(-1), batch.negative.reshape(-1)]), self.ctx.n_items)
            cols = cols.to(scores.device)
            return scores.index_add(1, cols, state @ self.item_knowledge(cols).to(state.dtype).T)
        if self.training:
            return scores + state @ self.item_knowledge().to(state.dtype).T
        if self._eval_items is None or self._eval_items.device != state.device:
            self._eval_items = self.item_knowledge().to(state.device)
        return scores + state @ self._eval_items.to(state.dtype).T
