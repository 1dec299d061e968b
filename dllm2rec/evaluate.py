"""Evaluation of students and teacher (docs/method.md §6): HR@K and NDCG@K, K in (1, 5, 10, 20).

The one place for the metrics, their names and the K list. **Rank convention**: a rank is
0-based in memory everywhere (0 = the target is first; -1 = the target is not ranked at all, a
miss at every K); ``ranks.parquet`` alone stores it 1-based on disk, converted by
:mod:`dllm2rec.student_run` where it writes and reads the file (docs/artifacts.md). Students rank
all n items (below); the teacher's grounded top-N list gives each test sequence a rank too
(:mod:`dllm2rec.teacher.metrics`); the tables' per-sequence values (Table 5's intervals and
p-values) come from the same ranks: all go through :func:`per_sequence`.

Students: full ranking over all n items. The target's 0-based rank is the number of items, other than itself, that score at least as high
as the target (**ties are pessimistic**: an item tied with the target counts as ranked above it,
so a constant or collapsed model gets rank n-1, not 0). A NaN target score ranks last; NaN scores
of other items count as above the target. No sort is materialised: each batch counts
``scores >= target score``. HR@K = mean [rank < K]; NDCG@K = mean [rank < K] / log2(rank + 2).
Students are evaluated in eval mode (dropout off) without gradients.

Importing this module imports the standard library only, not torch: the tables and the DAG
(:mod:`dllm2rec.selection`) read the metric names from here.
"""
from __future__ import annotations

import functools
from typing import Callable, Sequence

KS: tuple[int, ...] = (1, 5, 10, 20)
KINDS: tuple[str, ...] = ("HR", "NDCG")
TABLE_K = 20  # the K of the tables, the selection and the training log (docs/method.md §6)


def metric_name(kind: str, k: int = TABLE_K) -> str:
    """The name of a metric in every file and table: ``HR@20``, ``NDCG@5``, ..."""
    if kind not in KINDS:
        raise ValueError(f"unknown metric kind {kind!r} (one of {KINDS})")
    return f"{kind}@{k}"


def metric_names(ks: Sequence[int] = KS) -> list[str]:
    """Every metric name at ``ks``, in the order of :func:`metrics_from_ranks`: HR@K..., NDCG@K..."""
    return [metric_name(kind, k) for kind in KINDS for k in ks]


def parse_metric(name: str) -> tuple[str, int]:
    """``(kind, K)`` of a metric name (:func:`metric_name`'s inverse)."""
    kind, _, k = name.partition("@")
    if kind not in KINDS or not k.isdigit():
        raise ValueError(f"not a metric name: {name!r} (e.g. {metric_name('NDCG')})")
    return kind, int(k)


HR, NDCG = metric_name("HR"), metric_name("NDCG")  # HR@20, NDCG@20
TABLE_METRICS: tuple[str, ...] = (HR, NDCG)  # the tables' metrics, in their column order
SELECT_METRIC = NDCG  # what keeps a student's best epoch and picks a grid point (validation)


def _no_grad(fn):
    """``torch.no_grad()`` around ``fn``, torch imported at the call (not with this module)."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        import torch

        with torch.no_grad():
            return fn(*args, **kwargs)
    return wrapper


def target_rank(scores, target):
    """scores [B, n], target [B] -> 0-based pessimistic rank of each target, [B] long."""
    t = scores.gather(1, target.view(-1, 1))  # [B, 1]
    not_below = ~(scores < t)  # ties (the target itself included), higher scores, NaNs
    return not_below.sum(1) - 1


def per_sequence(ranks, kind: str, k: int):
    """Each sequence's HR@k (0 or 1) or NDCG@k (1 / log2(rank + 2) on a hit, else 0) from
    0-based ranks (a tensor, an array or a list; -1: not ranked, a miss), as a float64 tensor."""
    import torch

    r = torch.as_tensor(ranks).to(torch.float64)
    r = torch.where(r < 0, torch.full_like(r, float("inf")), r)
    if kind == "HR":
        return (r < k).to(torch.float64)
    if kind == "NDCG":
        return torch.where(r < k, 1.0 / torch.log2(r + 2.0), torch.zeros_like(r))
    raise ValueError(f"unknown metric kind {kind!r} (one of {KINDS})")


def metrics_from_ranks(ranks, ks: Sequence[int] = KS) -> dict[str, float]:
    """{"HR@K": .., "NDCG@K": ..} for every K: the means of :func:`per_sequence` (0 for no ranks)."""
    out: dict[str, float] = {}
    for kind in KINDS:
        for k in ks:
            values = per_sequence(ranks, kind, k)
            out[metric_name(kind, k)] = values.mean().item() if len(values) else 0.0
    return out


@_no_grad
def ranks_in_batches(score_fn: Callable, target: torch.Tensor, batch_size: int) -> torch.Tensor:
    """``score_fn(rows) -> scores [len(rows), n]`` for row indices; returns every target's rank (CPU)."""
    import torch

    out = []
    n_rows = len(target)
    for start in range(0, n_rows, batch_size):
        rows = torch.arange(start, min(start + batch_size, n_rows), device=target.device)
        out.append(target_rank(score_fn(rows), target[rows]).cpu())
    return torch.cat(out) if out else torch.zeros(0, dtype=torch.long)


@_no_grad
def rank_split(student, method, split: str, history: torch.Tensor, lengths: torch.Tensor, target: torch.Tensor,
               batch_size: int = 1024, top_k: int = 0) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Full ranking of one split's tensors by ``student`` (with distillation ``method``): every
    target's 0-based pessimistic rank [S], and with ``top_k`` the student's top-k item ids [S, k]
    (best first), both on the CPU."""
    import torch

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
    import torch

    scores = item_counts.to(torch.float64).view(1, -1)
    return metrics_from_ranks(ranks_in_batches(lambda rows: scores.expand(len(rows), -1), target, 4096), ks)


def chance_metrics(n_items: int, ks: Sequence[int] = KS) -> dict[str, float]:
    """The expected metrics of a uniformly random ranking of ``n_items`` items: the target's rank is
    uniform on 0..n-1, so HR@K = K/n and NDCG@K = (1/n) Σ_{r<K} 1/log2(r+2)."""
    import torch

    out = {metric_name("HR", k): min(k, n_items) / n_items for k in ks}
    for k in ks:
        out[metric_name("NDCG", k)] = sum(1.0 / torch.log2(torch.tensor(r + 2.0, dtype=torch.float64)).item()
                               for r in range(min(k, n_items))) / n_items
    return out


def popularity_reference(data: str, out: str) -> dict:
    """Table 5's reference rows for one dataset folder, written to ``out`` (popularity.json,
    :func:`dllm2rec.dataset.write_popularity`), on valid and test, the same ranking for every
    sequence, ties pessimistic: ``popularity``, the items by how often they occur in the training
    split's sequences (histories and targets: every training interaction the split holds), and
    ``popularity_targets``, by how often they are a training target (the counts DROS and the
    methods' ``item_counts`` use); and ``chance`` (:func:`chance_metrics`)."""
    import torch

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
    print(f"{dataset.name}: popularity test {HR} {popularity['test'][HR]:.4f} {NDCG} "
          f"{popularity['test'][NDCG]:.4f}; chance {HR} {chance[HR]:.4f}")
    return {"popularity": popularity, "chance": chance}


TOP_K = 20  # the student's top-K list kept per sequence in ranks.parquet (Table 3's overlap)
