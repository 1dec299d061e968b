"""Evaluation of students and teacher (docs/method.md §6): HR@K and NDCG@K, K in (1, 5, 10, 20).

The one place for the metrics and the K list: students rank all n items (below); the teacher's
grounded top-N list gives each test sequence a rank too (:mod:`dllm2rec.teacher.metrics`), and
both go through :func:`metrics_from_ranks`.

Students: full ranking over all n items. The target's 0-based rank is the number of items, other than itself, that score at least as high
as the target (**ties are pessimistic**: an item tied with the target counts as ranked above it,
so a constant or collapsed model gets rank n-1, not 0). A NaN target score ranks last; NaN scores
of other items count as above the target. No sort is materialised: each batch counts
``scores >= target score``. HR@K = mean [rank < K]; NDCG@K = mean [rank < K] / log2(rank + 2).
Students are evaluated in eval mode (dropout off) without gradients.
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch

KS: tuple[int, ...] = (1, 5, 10, 20)


def target_rank(scores: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """scores [B, n], target [B] -> 0-based pessimistic rank of each target, [B] long."""
    t = scores.gather(1, target.view(-1, 1))  # [B, 1]
    not_below = ~(scores < t)  # ties (the target itself included), higher scores, NaNs
    return not_below.sum(1) - 1


def metrics_from_ranks(ranks, ks: Sequence[int] = KS) -> dict[str, float]:
    """{"HR@K": .., "NDCG@K": ..} for every K from 0-based ranks (a tensor or array; a rank of
    -1 means the target was not ranked at all, a miss at every K)."""
    r = torch.as_tensor(ranks).to(torch.float64)
    r = torch.where(r < 0, torch.full_like(r, float("inf")), r)
    out: dict[str, float] = {}
    for k in ks:
        out[f"HR@{k}"] = (r < k).to(torch.float64).mean().item() if len(r) else 0.0
    for k in ks:
        gain = torch.where(r < k, 1.0 / torch.log2(r + 2.0), torch.zeros_like(r))
        out[f"NDCG@{k}"] = gain.mean().item() if len(r) else 0.0
    return out


@torch.no_grad()
def ranks_in_batches(score_fn: Callable[[torch.Tensor], torch.Tensor], target: torch.Tensor,
                     batch_size: int) -> torch.Tensor:
    """``score_fn(rows) -> scores [len(rows), n]`` for row indices; returns every target's rank (CPU)."""
    out = []
    n_rows = len(target)
    for start in range(0, n_rows, batch_size):
        rows = torch.arange(start, min(start + batch_size, n_rows), device=target.device)
        out.append(target_rank(score_fn(rows), target[rows]).cpu())
    return torch.cat(out) if out else torch.zeros(0, dtype=torch.long)


@torch.no_grad()
def rank_split(student, method, split: str, history: torch.Tensor, lengths: torch.Tensor, target: torch.Tensor,
               batch_size: int = 1024, top_k: int = 0) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Full ranking of one split's tensors by ``student`` (with distillation ``method``): every
    target's 0-based pessimistic rank [S], and with ``top_k`` the student's top-k item ids [S, k]
    (best first), both on the CPU."""
    from dllm2rec.distill.base import Batch

    modes = student.training, method.training
    student.eval()
    method.eval()
    tops = []
    try:
        table = method.item_table(student)  # fixed in eval mode: computed once per split

        def score(rows: torch.Tensor) -> torch.Tensor:
            batch = Batch(split, rows, history[rows], lengths[rows], target[rows])
            state = student.encode(batch.history, batch.lengths, table)
            scores = method.scores(student, method.adjust_state(state, batch), batch)
            if top_k:
                tops.append(scores.topk(min(top_k, scores.shape[1]), dim=1).indices.cpu())
            return scores

        ranks = ranks_in_batches(score, target, batch_size)
    finally:
        student.train(modes[0])
        method.train(modes[1])
    if not top_k:
        return ranks, None
    return ranks, (torch.cat(tops) if tops else torch.zeros(0, top_k, dtype=torch.long))


def evaluate(student, method, split: str, history: torch.Tensor, lengths: torch.Tensor, target: torch.Tensor,
             batch_size: int = 1024, ks: Sequence[int] = KS) -> dict[str, float]:
    """Full-ranking metrics of ``student`` (with distillation ``method``) on one split's tensors."""
    return metrics_from_ranks(rank_split(student, method, split, history, lengths, target, batch_size)[0], ks)


def popularity_metrics(item_counts: torch.Tensor, target: torch.Tensor, ks: Sequence[int] = KS) -> dict[str, float]:
    """The popularity ranking (train target counts, ties pessimistic) as a reference point."""
    scores = item_counts.to(torch.float64).view(1, -1)
    return metrics_from_ranks(ranks_in_batches(lambda rows: scores.expand(len(rows), -1), target, 4096), ks)


def chance_metrics(n_items: int, ks: Sequence[int] = KS) -> dict[str, float]:
    """The expected metrics of a uniformly random ranking of ``n_items`` items: the target's rank is
    uniform on 0..n-1, so HR@K = K/n and NDCG@K = (1/n) Σ_{r<K} 1/log2(r+2)."""
    out = {f"HR@{k}": min(k, n_items) / n_items for k in ks}
    for k in ks:
        out[f"NDCG@{k}"] = sum(1.0 / torch.log2(torch.tensor(r + 2.0, dtype=torch.float64)).item()
                               for r in range(min(k, n_items))) / n_items
    return out


def popularity_reference(data: str, out: str) -> dict:
    """Table 5's reference rows for one dataset folder, written to ``out`` (popularity.json,
    :func:`dllm2rec.dataset.write_popularity`), on valid and test, the same ranking for every
    sequence, ties pessimistic: ``popularity``, the items by how often they occur in the training
    split's sequences (histories and targets: every training interaction the split holds), and
    ``popularity_targets``, by how often they are a training target (the counts DROS and the
    methods' ``item_counts`` use); and ``chance`` (:func:`chance_metrics`)."""
    from dllm2rec.dataset import load_dataset, write_popularity

    dataset = load_dataset(data)
    n = dataset.n_items
    p = dataset.padded()
    target = torch.from_numpy(p.target).long()
    train = p.split == "train"
    targets = torch.bincount(target[torch.from_numpy(train)], minlength=n)
    history = torch.from_numpy(p.history[train])
    interactions = targets + torch.bincount(history[history < n], minlength=n)  # padding (id n) dropped

    def metrics(counts):
        return {split: popularity_metrics(counts, target[torch.from_numpy(p.split == split)]) for split in ("valid", "test")}

    popularity, chance = metrics(interactions), chance_metrics(n)
    write_popularity(out, dataset.name, n, int(train.sum()), popularity, chance, metrics(targets))
    print(f"{dataset.name}: popularity test HR@20 {popularity['test']['HR@20']:.4f} NDCG@20 "
          f"{popularity['test']['NDCG@20']:.4f}; chance HR@20 {chance['HR@20']:.4f}")
    return {"popularity": popularity, "chance": chance}


TOP_K = 20  # the student's top-K list kept per sequence in ranks.parquet (Table 3's overlap)
