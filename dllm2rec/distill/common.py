"""Helpers several distillation methods share: reading the teacher's rows, ranks, seeded
sampling (teacher-list positions, negatives that exclude the sequence's own items) and the
treatment of teacher embeddings.

Nothing here loops over rows: every helper works on a batch at once.
"""
from __future__ import annotations

import torch
from torch import nn

from dllm2rec.io import UserError

# --- the teacher's artifacts ----------------------------------------------------------------


def teacher_split(ctx, split: str):
    """The loaded :class:`~dllm2rec.distill.base.TeacherSplit` of ``split`` (UserError if absent)."""
    if ctx.teacher is None or split not in ctx.teacher.splits:
        raise UserError(f"teacher output for split {split!r} is not loaded")
    return ctx.teacher.splits[split]


def teacher_rows(ctx, batch, device, n: int | None = None):
    """The batch's teacher ranking: items [B, N'] long and distances [B, N'] float (best first),
    the first ``n`` of each list when given."""
    sp = teacher_split(ctx, batch.split)
    rows = batch.rows.to(sp.topk_items.device)
    items = sp.topk_items[rows]
    dist = sp.topk_dist[rows]
    if n is not None:
        items, dist = items[:, :n], dist[:, :n]
    return items.to(device).long(), dist.to(device).float()


def teacher_item_emb(ctx) -> torch.Tensor:
    """The teacher's title embeddings z [n, d_t] float32, checked against the dataset."""
    if ctx.teacher is None or ctx.teacher.item_emb is None:
        raise UserError("this method needs the teacher's item embeddings")
    z = ctx.teacher.item_emb.float()
    if z.shape[0] != ctx.n_items:
        raise UserError(f"teacher item_emb has {z.shape[0]} rows, expected n_items={ctx.n_items}")
    return z


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


def make_projector(kind: str, d_in: int, d_out: int) -> nn.Module:
    """``linear``: Linear(d_in, d_out); ``mlp``: Linear(d_in, 2 d_in) -> ReLU -> Linear(2 d_in, d_out)."""
    if kind == "linear":
        return nn.Linear(d_in, d_out)
    if kind == "mlp":
        return nn.Sequential(nn.Linear(d_in, d_in * 2), nn.ReLU(), nn.Linear(d_in * 2, d_out))
    raise UserError(f"projector must be linear or mlp, got {kind!r}")


# --- items of a batch -----------------------------------------------------------------------


def distinct_items(ids: torch.Tensor, n_items: int) -> torch.Tensor:
    """Sorted distinct real item ids in ``ids`` (any shape), the padding id ``n_items`` dropped."""
    items = torch.unique(ids)
    return items[items < n_items]


def batch_items(batch, n_items: int) -> torch.Tensor:
    """Sorted distinct real item ids of a batch: history (padding dropped), target and negative."""
    parts = [batch.history.reshape(-1), batch.target.reshape(-1)]
    if batch.negative is not None:
        parts.append(batch.negative.reshape(-1))
    return distinct_items(torch.cat(parts), n_items)


def seen_mask(history: torch.Tensor, target: torch.Tensor, n_items: int) -> torch.Tensor:
    """[B, n_items] bool: True for the items of each row's history and its target (padding,
    the id ``n_items``, is ignored)."""
    b = history.shape[0]
    mask = torch.zeros(b, n_items + 1, dtype=torch.bool, device=history.device)
    mask.scatter_(1, history.long(), True)
    mask.scatter_(1, target.long().view(b, -1).to(history.device), True)
    return mask[:, :n_items]


# --- ranks and seeded sampling --------------------------------------------------------------


@torch.no_grad()
def student_ranks(scores: torch.Tensor) -> torch.Tensor:
    """1-based rank of every item in the student's full ranking [B, n] (ties broken by sort)."""
    order = scores.argsort(dim=1, descending=True)
    ranks = torch.empty_like(order)
    ar = torch.arange(1, scores.shape[1] + 1, device=scores.device).expand_as(order)
    ranks.scatter_(1, order, ar)
    return ranks


class SeededSampler:
    """One torch.Generator per device, seeded from the run's seed and a per-method ``salt``, so
    sampling is reproducible. A method that keeps it as ``self.sampler`` has its state saved
    in training checkpoints (``DistillMethod.rng_state``)."""

    def __init__(self, seed: int, salt: int):
        self.seed = int(seed) * 1000003 + salt
        self._gens: dict[str, torch.Generator] = {}

    def __call__(self, device) -> torch.Generator:
        key = str(torch.device(device))
        if key not in self._gens:
            g = torch.Generator(device=device)
            g.manual_seed(self.seed)
            self._gens[key] = g
        return self._gens[key]

    def get_state(self) -> dict:
        return {key: g.get_state() for key, g in self._gens.items()}

    def set_state(self, state: dict) -> None:
        for key, st in state.items():
            self(key).set_state(st)


def multinomial_masked(weights: torch.Tensor, k: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Sample k columns per row without replacement with p ∝ weights (>= 0).

    Rows with fewer than k positive weights still return k indices: the extra ones are drawn
    among the zero-weight columns and flagged invalid. Returns (idx [R, k], valid [R, k]).
    """
    k = min(k, weights.shape[1])
    w = weights.clamp_min(0)
    # a tiny floor keeps torch.multinomial legal; floor-weight picks only happen once every
    # positive-weight column is taken (probability ~1e-30 otherwise) and are masked out.
    idx = torch.multinomial(w + 1e-30, k, replacement=False, generator=gen)
    valid = w.gather(1, idx) > 0
    return idx, valid


def sample_negatives(history: torch.Tensor, target: torch.Tensor, n_items: int, n: int, gen: torch.Generator,
                     exclude: torch.Tensor | None = None, replacement: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` items per row drawn uniformly among the items that are neither in the row's history
    nor its target (nor in ``exclude`` [B, m], e.g. the teacher's list; ids >= n_items ignored).

    history [B, L] (padded with n_items), target [B] (or [B, t]). Without replacement a row
    with fewer than ``n`` allowed items returns invalid extras. Returns (items [B, n] long,
    valid [B, n] bool).
    """
    allowed = ~seen_mask(history, target, n_items)
    if exclude is not None:
        b = exclude.shape[0]
        extra = torch.zeros(b, n_items + 1, dtype=torch.bool, device=exclude.device)
        extra.scatter_(1, exclude.long().clamp(0, n_items), True)
        allowed &= ~extra[:, :n_items].to(allowed.device)
    w = allowed.float()
    if not replacement:
        return multinomial_masked(w, n, gen)
    idx = torch.multinomial(w + 1e-30, n, replacement=True, generator=gen)
    return idx, allowed.gather(1, idx)
