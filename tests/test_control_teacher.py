"""scripts/control_teacher.py: a trained student written as a teacher folder that the contract's
readers accept, with the student's own ranking."""
import importlib.util
from pathlib import Path

import numpy as np
import torch

from dllm2rec.distill.teacher_data import load_teacher
from dllm2rec.student.train import load_model, load_sequences, train_student
from synthetic import write_synthetic_dataset

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "control_teacher.py"
STUDENT = {"hidden": 16, "dropout": 0.1, "lr": 0.005, "batch_size": 64, "weight_decay": 0.0, "epochs": 3,
           "patience": 3, "eval_batch_size": 256, "device": "cpu", "backbone": {"num_heads": 1, "num_blocks": 1}}


def _script():
    spec = importlib.util.spec_from_file_location("control_teacher", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_control_teacher_is_a_readable_teacher_with_the_students_ranking(tmp_path):
    write_synthetic_dataset(tmp_path / "data", n_items=150, n_sequences=400, p_rule=0.5, seed=0)
    train_student(str(tmp_path / "data"), "sasrec", "none", {"student": STUDENT, "method": {"type": "none"}}, 0,
                  str(tmp_path / "run"), str(tmp_path / "work"), threads=1)
    hr = _script().write_control_teacher(tmp_path / "run" / "model.pt", tmp_path / "data", tmp_path / "teacher")
    n, _, splits = load_sequences(tmp_path / "data")
    tr = splits["train"]
    tt = load_teacher(tmp_path / "teacher", {"train": tr.seq_id}, n, ("ranks", "item_embeddings"))
    top = tt.splits["train"].topk_items
    assert top.shape == (len(tr.seq_id), 100)
    student, table = load_model(tmp_path / "run" / "model.pt")
    with torch.no_grad():
        scores = student.scores(student.encode(tr.history, tr.lengths, table))
    assert torch.equal(top[:, :10].long(), scores.topk(10, 1).indices)  # the student's own order, row by row
    dist = tt.splits["train"].topk_dist
    assert float(dist[:, 0].abs().max()) == 0.0 and bool((dist[:, 1:] >= dist[:, :-1]).all())  # ascending, >= 0
    assert tt.item_emb.shape == (n, 16)
    want = float((scores.topk(20, 1).indices == tr.target[:, None]).any(1).float().mean())
    assert np.isclose(hr, want) and 0.0 < hr <= 1.0
