"""The one interface every student backbone implements (RecBole-style).

Shapes (official DLLM2Rec code): an item embedding table with ``n_items + 1`` rows (row
``n_items`` is padding), hidden size 64, dropout 0.1, and an output layer ``Linear(hidden,
n_items)`` that scores every item. Histories are right-padded with ``n_items`` to ``max_len``.

A training step is::

    table  = method.item_table(student)            # [n+1, d] input embeddings (maybe enriched)
    state  = student.encode(history, lengths, table)   # [B, d] sequence representation
    state  = method.adjust_state(state, batch)     # KAR / LLM-CF add features; identity otherwise
    scores = student.scores(state)                 # [B, n]
    loss   = student.rec_loss(scores, target, negative) + method.loss(batch, scores, state, student, epoch)
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

import importlib

from dllm2rec import settings
from dllm2rec.io import UserError

BACKBONES: dict[str, type["SequentialRecommender"]] = {}  # the implementations of settings.BACKBONES


class NoiseSource:
    """Uniform random numbers for the dropout masks of one training step, per member of a fused
    group (dllm2rec/student/fused.py). Inside ``torch.func.vmap`` each member sees its own row of
    ``noise`` [N, T]; every :class:`Dropout` takes the next slice of it. ``noise`` None counts the
    numbers a step needs (``used``) without drawing any."""

    active: "NoiseSource | None" = None  # the source of the step in progress (one at a time)

    def __init__(self, noise: torch.Tensor | None):
        self.noise, self.used = noise, 0

    def take(self, shape: torch.Size) -> torch.Tensor | None:
        n = shape.numel()
        start, self.used = self.used, self.used + n
        if self.noise is None:
            return None
        if self.used > self.noise.shape[-1]:
            raise RuntimeError(f"dropout noise exhausted: the step needs more than {self.noise.shape[-1]} numbers")
        return self.noise[start:self.used].view(shape)


class Dropout(nn.Dropout):
    """``nn.Dropout``, except that while a :class:`NoiseSource` is active (fused training) its mask
    is ``u >= p`` for the source's next uniform numbers ``u``, so that each member of a fused group
    draws its masks from its own seeded stream. Otherwise (the eager trainer, evaluation,
    serving) it is ``nn.Dropout``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        source = NoiseSource.active
        if source is None or not self.training or self.p == 0:
            return super().forward(x)
        u = source.take(x.shape)
        if u is None:  # counting pass
            return x
        return x * (u >= self.p).to(x.dtype) / (1.0 - self.p)


def register_backbone(name: str):
    """Class decorator: the implementation of backbone ``name`` (its options: ``settings.BACKBONES``)."""
    if name not in settings.BACKBONES:
        raise TypeError(f"backbone {name!r} has no options registered in dllm2rec/settings.py")

    def deco(cls):
        cls.name = name
        BACKBONES[name] = cls
        return cls

    return deco


def get_backbone(name: str) -> type["SequentialRecommender"]:
    if name not in settings.BACKBONES:
        raise UserError(f"unknown backbone {name!r}; known: {', '.join(settings.BACKBONES)}")
    importlib.import_module(f"dllm2rec.student.{name}")  # each registers itself: dllm2rec/student/<name>.py
    return BACKBONES[name]


class SequentialRecommender(nn.Module):
    name: str = "base"
    stacked: bool = False  # set by fused training (its parameters then carry a member axis under vmap)

    def __init__(self, n_items: int, hidden: int = settings.StudentSettings.hidden,
                 dropout: float = settings.StudentSettings.dropout, max_len: int = 10, **kwargs):
        """``kwargs``: the backbone's own options (``student.backbones.<name>``, defaults in
        dllm2rec/settings.py) plus ``item_counts`` ([n] long, train target counts, which DROS
        uses); unknown keys are ignored. ``max_len``: the history length (the dataset's)."""
        super().__init__()
        self.n_items = n_items
        self.pad = n_items
        self.hidden = hidden
        self.max_len = max_len
        self.item_emb = nn.Embedding(n_items + 1, hidden, padding_idx=n_items)
        nn.init.normal_(self.item_emb.weight, 0.0, 0.01)  # official init
        with torch.no_grad():
            self.item_emb.weight[n_items].zero_()
        self.dropout = Dropout(dropout)
        self.out = nn.Linear(hidden, n_items)

    def embed(self, history: torch.Tensor, table: torch.Tensor | None) -> torch.Tensor:
        """history [B, L] -> input embeddings [B, L, d] from ``table`` (or the own ID table)."""
        return F.embedding(history, self.item_emb.weight if table is None else table)

    # --- to implement per backbone -------------------------------------------------------
    def encode(self, history: torch.Tensor, lengths: torch.Tensor, table: torch.Tensor | None = None) -> torch.Tensor:
        """history [B, L] long (right-padded with n_items), lengths [B] long >= 1,
        table [n+1, d] input embeddings (``self.item_emb.weight`` when None) -> state [B, d]."""
        raise NotImplementedError

    # --- shared ----------------------------------------------------------------------------
    def scores(self, state: torch.Tensor) -> torch.Tensor:
        """state [B, d] -> scores over all items [B, n]."""
        return self.out(state)

    def rec_loss(self, scores: torch.Tensor, target: torch.Tensor, negative: torch.Tensor) -> torch.Tensor:
        """Eq. 3: BCE with one sampled negative per sequence, mean over the 2B logits (as the
        released code's ``BCEWithLogitsLoss`` over the concatenated positives and negatives).
        Written with log-sigmoid: -log σ(x) = softplus(-x), -log(1-σ(x)) = softplus(x)."""
        pos = scores.gather(1, target.view(-1, 1))
        neg = scores.gather(1, negative.view(-1, 1))
        return 0.5 * (F.softplus(-pos).mean() + F.softplus(neg).mean())
