"""`student.compile`: the training step through torch.compile trains the same model as the eager one.

With Inductor's random numbers falling back to torch's (``fallback_random``), the compiled step
draws the same dropout masks as the eager step, so the per-epoch losses and the selected model's
metrics must agree to float rounding. (Without it, runs agree within seed noise only.) On a GPU
the same option replays the step as a CUDA graph (``reduce-overhead``), which this CPU test cannot
reach: benchmarks/student_epoch.py --compile measures it there.
"""
import csv
import shutil

import pytest
import torch

from dllm2rec.student.train import train_student
from synthetic import write_synthetic_dataset, write_synthetic_teacher

pytestmark = pytest.mark.skipif(shutil.which("cc") is None and shutil.which("gcc") is None,
                                reason="torch.compile on the CPU needs a C compiler")

STUDENT = {"hidden": 16, "dropout": 0.1, "lr": 0.005, "batch_size": 64, "weight_decay": 1e-6, "epochs": 2,
           "patience": 10, "eval_batch_size": 256, "device": "cpu",
           "backbone": {"num_heads": 1, "num_blocks": 1, "alpha": 0.5, "beta": 1.0, "ps_power": 0.05}}
DLLM2REC = {"type": "dllm2rec", "lambda_d": 0.7, "k": 3}


def _log(out):
    with open(out / "train_log.csv") as f:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(f)]


def test_compiled_step_matches_eager(tmp_path, monkeypatch):
    import torch._inductor.config as inductor_config
    from torch._dynamo.utils import counters

    monkeypatch.setattr(inductor_config, "fallback_random", True)
    torch._dynamo.reset()
    write_synthetic_dataset(tmp_path / "data", n_items=60, n_sequences=300, p_rule=0.5, seed=0)
    write_synthetic_teacher(tmp_path / "teacher", tmp_path / "data", topn=10, width=8, quality=1.0, rule_seed=0)
    runs, graphs = {}, {}
    for compiled in (False, True):
        counters.clear()
        out = tmp_path / f"compile-{compiled}"
        params = {"student": {**STUDENT, "compile": compiled}, "method": DLLM2REC}
        runs[compiled] = (train_student(str(tmp_path / "data"), "dros", "dllm2rec", params, 0, str(out),
                                        str(tmp_path / f"work-{compiled}"), teacher=str(tmp_path / "teacher"),
                                        threads=1), _log(out))
        graphs[compiled] = counters["stats"]["unique_graphs"]
    assert graphs[False] == 0 and graphs[True] >= 2  # encode and rec_loss went through Dynamo
    (eager, eager_log), (comp, comp_log) = runs[False], runs[True]
    assert len(eager_log) == len(comp_log) == 2
    for a, b in zip(eager_log, comp_log):
        for key in ("loss", "rec_loss", "distill_loss"):
            assert b[key] == pytest.approx(a[key], rel=1e-4, abs=1e-6), key
    for split in ("valid", "test"):
        for k, v in eager[split].items():
            assert comp[split][k] == pytest.approx(v, abs=1e-6), (split, k)
    assert eager["params"]["student"]["compile"] is False and comp["params"]["student"]["compile"] is True
