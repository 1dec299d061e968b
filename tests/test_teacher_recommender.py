"""dllm2rec.teacher.recommender: a backbone trained without distillation, written as a teacher
folder that the contract's readers accept, with the backbone's own ranking on every split."""
import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from dllm2rec import layout
from dllm2rec.distill.teacher_data import load_teacher
from dllm2rec.io import UserError
from dllm2rec.student.train import load_sequences
from dllm2rec.student_run import load_student
from dllm2rec.teacher.metrics import teacher_metrics
from dllm2rec.teacher.recommender import recommender_teacher
from synthetic import write_synthetic_dataset

STUDENT = {"hidden": 16, "dropout": 0.1, "lr": 0.005, "batch_size": 64, "weight_decay": 0.0, "epochs": 3,
           "patience": 3, "eval_batch_size": 256, "device": "cpu", "backbone": {"num_heads": 1, "num_blocks": 1}}


def test_recommender_teacher_ranks_every_split_with_its_own_scores(tmp_path):
    write_synthetic_dataset(tmp_path / "data", n_items=150, n_sequences=400, p_rule=0.5, seed=0)
    out = tmp_path / "teacher"
    recommender_teacher(str(tmp_path / "data"), str(tmp_path / "data"), "sasrec", {"student": STUDENT}, 0, str(out),
                        str(tmp_path / "work"), topn=30, label="SASRec (test)", threads=1, device="cpu")
    run = out / layout.RECOMMENDER_RUN
    assert json.loads((run / "metrics.json").read_text())["method"] == "none"
    n, _, splits = load_sequences(tmp_path / "data")
    student, table, _ = load_student(run / "model.pt")
    for split in ("train", "valid", "test"):
        d = splits[split]
        tt = load_teacher(out, {split: d.seq_id}, n, ("ranks", "item_embeddings"))
        top, dist = tt.splits[split].topk_items, tt.splits[split].topk_dist
        assert top.shape == (len(d.seq_id), 30)
        with torch.no_grad():
            scores = student.scores(student.encode(d.history, d.lengths, table))
        assert torch.equal(top[:, :10].long(), scores.topk(10, 1).indices)  # its own order, row by row
        assert float(dist[:, 0].abs().max()) == 0.0 and bool((dist[:, 1:] >= dist[:, :-1]).all())  # ascending, >= 0
        want = scores.max(1).values - scores.gather(1, d.target[:, None].long())[:, 0]
        torch.testing.assert_close(tt.splits[split].target_dist, want)
    assert tt.item_emb.shape == (n, 16) and torch.equal(tt.item_emb, table[:n].float())
    # metrics.json from its test ranks, named by its kind; HR@20 as its own top-20 gives it
    teacher_metrics(str(tmp_path / "data"), str(out / "metrics.json"), ranks=str(out / "ranks" / "test.parquet"),
                    teacher="t", kind="SASRec (test)")
    m = json.loads((out / "metrics.json").read_text())
    d = splits["test"]
    with torch.no_grad():
        scores = student.scores(student.encode(d.history, d.lengths, table))
    hr = float((scores.topk(20, 1).indices == d.target[:, None]).any(1).float().mean())
    assert m["kind"] == "SASRec (test)" and m["inference_seconds"] > 0
    assert m["test"]["HR@20"] == pytest.approx(hr)


def test_recommender_teacher_refuses_training_data_with_other_items(tmp_path):
    write_synthetic_dataset(tmp_path / "a", n_items=50, n_sequences=100, seed=0)
    write_synthetic_dataset(tmp_path / "b", n_items=50, n_sequences=100, seed=0)
    items = pq.read_table(tmp_path / "b" / "items.parquet")
    raw = items.column("raw_id").to_pylist()
    pq.write_table(items.set_column(items.column_names.index("raw_id"), "raw_id", pa.array(raw[::-1])),
                   tmp_path / "b" / "items.parquet")
    with pytest.raises(UserError, match="different item tables"):
        recommender_teacher(str(tmp_path / "a"), str(tmp_path / "b"), "sasrec", {"student": STUDENT}, 0,
                            str(tmp_path / "t"), str(tmp_path / "w"), device="cpu")
    assert not (tmp_path / "t").exists()


def test_teacher_ranks_of_a_sampled_dataset_join_the_whole_ones_by_seq_id(tmp_path):
    """The whole and the sampled dataset of one source share seq_ids and histories, which is what
    lets a teacher trained on the whole split rank the students' sequences."""
    from dllm2rec.data.build import build_dataset

    base = {"source": "ml-100k", "sample_rule": "movielens", "max_history": 10}
    build_dataset("ml-100k", {**base}, str(tmp_path / "whole"))
    build_dataset("ml-100k", {**base, "sample": {"train": 300, "valid": 50, "test": 50, "seed": 0}}, str(tmp_path / "cap"))
    _, _, whole = load_sequences(tmp_path / "whole")
    _, _, cap = load_sequences(tmp_path / "cap")
    for split in ("train", "valid", "test"):
        pos = {s: i for i, s in enumerate(whole[split].seq_id)}
        rows = np.array([pos[s] for s in cap[split].seq_id])
        assert torch.equal(whole[split].history[rows], cap[split].history)
        assert torch.equal(whole[split].target[rows], cap[split].target)
