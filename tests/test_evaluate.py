"""Full-ranking HR/NDCG against hand-ranked examples."""
import math

import pytest
import torch

from dllm2rec.evaluate import KS, evaluate, metrics_from_ranks, popularity_metrics, ranks_in_batches, target_rank


def test_rank_counts_items_above_the_target():
    scores = torch.tensor([[0.1, 0.5, 0.3, 0.9], [0.9, 0.1, 0.2, 0.3]])
    assert target_rank(scores, torch.tensor([2, 0])).tolist() == [2, 0]


def test_ties_are_pessimistic_and_nan_ranks_last():
    scores = torch.tensor([[1.0, 1.0, 1.0, 0.0], [0.0, float("nan"), 2.0, 1.0], [float("nan"), 1.0, 2.0, 3.0]])
    # row 0: two items tie with the target -> rank 2; row 1: a NaN item counts above -> 1 + 1;
    # row 2: NaN target -> last (n - 1)
    assert target_rank(scores, torch.tensor([1, 2, 0])).tolist() == [2, 1, 3]
    constant = torch.zeros(3, 50)
    assert target_rank(constant, torch.tensor([0, 7, 49])).tolist() == [49, 49, 49]


def test_metrics_by_hand():
    m = metrics_from_ranks(torch.tensor([0, 2, 7, 30]))
    assert set(m) == {f"{k}@{K}" for k in ("HR", "NDCG") for K in KS}
    assert m["HR@1"] == 0.25 and m["HR@5"] == 0.5 and m["HR@10"] == 0.75 and m["HR@20"] == 0.75
    assert m["NDCG@1"] == pytest.approx(0.25)
    assert m["NDCG@5"] == pytest.approx((1 + 1 / math.log2(4)) / 4)
    assert m["NDCG@20"] == pytest.approx((1 + 1 / math.log2(4) + 1 / math.log2(9)) / 4)


def test_batched_equals_unbatched():
    g = torch.Generator().manual_seed(0)
    scores = torch.randn(103, 40, generator=g)
    target = torch.randint(0, 40, (103,), generator=g)
    full = target_rank(scores, target)
    assert torch.equal(ranks_in_batches(lambda rows: scores[rows], target, 10), full)
    # and equals the position in a full descending sort (no ties in random floats)
    order = scores.argsort(1, descending=True)
    assert torch.equal((order == target.unsqueeze(1)).float().argmax(1), full)


def test_popularity_metrics():
    counts = torch.tensor([5, 1, 9, 0])  # ranking 2, 0, 1, 3
    m = popularity_metrics(counts, torch.tensor([2, 0, 3]))
    assert m["HR@1"] == pytest.approx(1 / 3) and m["NDCG@5"] == pytest.approx((1 + 1 / math.log2(3) + 1 / math.log2(5)) / 3)


def test_evaluate_runs_in_eval_mode_without_grad():
    from dllm2rec.distill.base import DistillMethod
    from dllm2rec.student import get_backbone

    torch.manual_seed(0)
    student = get_backbone("sasrec")(20, hidden=8, dropout=0.9, max_len=4)
    method = DistillMethod({}, None, student)
    history = torch.randint(0, 20, (30, 4))
    lengths = torch.full((30,), 4)
    target = torch.randint(0, 20, (30,))
    student.train()
    a = evaluate(student, method, "valid", history, lengths, target, batch_size=7)
    b = evaluate(student, method, "valid", history, lengths, target, batch_size=30)
    assert a == b  # dropout 0.9 would make two train-mode passes differ
    assert student.training  # mode restored
    with torch.no_grad():
        student.eval()
        scores = student.scores(student.encode(history, lengths))
    assert a == metrics_from_ranks(target_rank(scores, target))
