"""The embedded knowledge texts that LLM-CF reads: the item titles and the teacher's
generated text per sequence, embedded either by the teacher itself (``encoder: teacher``: BIGRec's
grounding embeddings, the files the teacher writes) or by the separate text encoder
(``encoder: minilm``: all-MiniLM-L6-v2, ``dllm2rec/teacher/text_encoder.py``), as KAR and LLM-CF
encode their knowledge texts with a text encoder of their own (BERT / BGE).

Teacher embeddings are LLM hidden states, strongly anisotropic: they are standardised per
dimension with the item table's statistics (our choice). The text encoder's vectors are used as
the encoder gives them (mean pooling, L2-normalised), as KAR and LLM-CF use theirs.
"""
from __future__ import annotations

import torch

from dllm2rec.distill.common import teacher_split
from dllm2rec.io import UserError

class Knowledge:
    """Item and generated-text vectors of one encoder, on one scale.

    ``items`` [n, d] float32; :meth:`generated` returns the rows of a split's generated-text
    vectors, in the same scale as ``items``.
    """

    def __init__(self, ctx, encoder: str):
        self.ctx, self.encoder = ctx, encoder
        t = ctx.teacher
        raw = None if t is None else (t.item_emb if encoder == "teacher" else t.text_item_emb)
        if raw is None or raw.numel() == 0:
            raise UserError(f"this method needs the item embeddings of encoder {encoder!r}")
        raw = raw.float()
        if raw.shape[0] != ctx.n_items:
            raise UserError(f"{encoder} item embeddings have {raw.shape[0]} rows, expected n_items={ctx.n_items}")
        if encoder == "teacher":
            self.mean = raw.mean(0, keepdim=True)
            self.std = raw.std(0, keepdim=True, unbiased=False).clamp_min(1e-6)
        else:
            self.mean, self.std = torch.zeros(1, raw.shape[1]), torch.ones(1, raw.shape[1])
        self.items = (raw - self.mean) / self.std
        self.dim = raw.shape[1]

    def generated_raw(self, split: str) -> torch.Tensor:
        """The split's stored generated-text vectors [S, d] (unscaled; float16 kept as stored)."""
        sp = teacher_split(self.ctx, split)
        g = sp.gen_emb if self.encoder == "teacher" else sp.text_gen_emb
        if g is None:
            raise UserError(f"this method needs the {self.encoder} embeddings of the generated texts of split {split!r}")
        return g

    def scale(self, g: torch.Tensor) -> torch.Tensor:
        return (g.float() - self.mean.to(g.device)) / self.std.to(g.device)

    def generated(self, split: str, rows: torch.Tensor) -> torch.Tensor:
        g = self.generated_raw(split)
        return self.scale(g[rows.to(g.device)])
