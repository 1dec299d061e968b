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
from torch import nn

BACKBONES: dict[str, type["SequentialRecommender"]] = {}


def register_backbone(name: str):
    def deco(cls):
        cls.name = name
        BACKBONES[name] = cls
        return cls

    return deco


def get_backbone(name: str) -> type["SequentialRecommender"]:
    # import the modules so they register themselves
    from dllm2rec.student import dros, gru4rec, sasrec  # noqa: F401

    if name not in BACKBONES:
        raise KeyError(f"unknown backbone {name!r}; known: {sorted(BACKBONES)}")
    return BACKBONES[name]


class SequentialRecommender(nn.Module):
    name: str = "base"

    def __init__(self, n_items: int, hidden: int = 64, dropout: float = 0.1, max_len: int = 10, **kwargs):
        super().__init__()
        self.n_items = n_items
        self.pad = n_items
        self.hidden = hidden
        self.max_len = max_len
        self.item_emb = nn.Embedding(n_items + 1, hidden, padding_idx=n_items)
        self.dropout = nn.Dropout(dropout)
        self.out = nn.Linear(hidden, n_items)

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
        """Eq. 3: BCE with one sampled negative per sequence, mean over the batch."""
        raise NotImplementedError
