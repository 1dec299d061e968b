"""`student.compile`: the training step through torch.compile trains the same model as the eager one;
and on a GPU the step's forward and backward never read a value back to the host.

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

from dllm2rec.distill.base import Batch
from dllm2rec.student import train as train_mod
from dllm2rec.student.train import train_student
from synthetic import write_synthetic_dataset, write_synthetic_teacher

needs_cc = pytest.mark.skipif(shutil.which("cc") is None and shutil.which("gcc") is None,
                              reason="torch.compile on the CPU needs a C compiler")

STUDENT = {"hidden": 16, "dropout": 0.1, "lr": 0.005, "batch_size": 64, "weight_decay": 1e-6, "epochs": 2,
           "patience": 10, "eval_batch_size": 256, "device": "cpu",
           "backbone": {"num_heads": 1, "num_blocks": 1, "alpha": 0.5, "beta": 1.0, "ps_power": 0.05}}
DLLM2REC = {"type": "dllm2rec", "lambda_d": 0.7, "k": 3}


def _log(out):
    with open(out / "train_log.csv") as f:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(f)]


@needs_cc
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
    assert graphs[False] == 0 and graphs[True] >= 1  # the step's forward went through Dynamo
    (eager, eager_log), (comp, comp_log) = runs[False], runs[True]
    assert len(eager_log) == len(comp_log) == 2
    for a, b in zip(eager_log, comp_log):
        for key in ("loss", "rec_loss", "distill_loss"):
            assert b[key] == pytest.approx(a[key], rel=1e-4, abs=1e-6), key
    for split in ("valid", "test"):
        for k, v in eager[split].items():
            assert comp[split][k] == pytest.approx(v, abs=1e-6), (split, k)
    assert eager["params"]["student"]["compile"] is False and comp["params"]["student"]["compile"] is True


@pytest.mark.parametrize("backbone", ["dros", "sasrec", "gru4rec"])
@pytest.mark.parametrize("method", [{"type": "none"}, DLLM2REC, {**DLLM2REC, "variant": "official"},
                                    {**DLLM2REC, "projector": "mlp", "offset": False}])
def test_training_step_reads_nothing_back_on_a_gpu(tmp_path, backbone, method):
    """The step's forward (the method's item table, the backbone, scores, L_r), the distillation
    loss and the backward pass run on the meta device, which has shapes but no values: any
    operation whose result size depends on values (``torch.unique``, ``nonzero``, boolean
    masks) or that reads a value (``.item()``, ``bool()``) fails there. On a GPU each of those
    would stall the step until the device caught up, and would break a CUDA graph."""
    write_synthetic_dataset(tmp_path / "data", n_items=60, n_sequences=300, p_rule=0.5, seed=0)
    write_synthetic_teacher(tmp_path / "teacher", tmp_path / "data", topn=10, width=8, quality=1.0, rule_seed=0)
    params = {"student": {**STUDENT, "device": "meta", "backbone": {"alpha": 0.5} if backbone == "dros" else {}},
              "method": method}
    run = train_mod._prepare(str(tmp_path / "data"), backbone, method["type"], params, 0, str(tmp_path / "teacher"),
                             "meta")
    tr = run.splits["train"]
    rows = torch.arange(64, device="meta")
    batch = Batch("train", rows, tr.history[rows], tr.lengths[rows], tr.target[rows],
                  torch.zeros(64, dtype=torch.long, device="meta"))
    scores, state, rec = train_mod.step_forward(run.student, run.meth, batch)
    dist = train_mod._distill_loss(run, batch, scores, state, epoch=0)
    (rec + dist).backward()
    assert scores.shape == (64, run.n_items) and scores.is_meta
    grads = [p.grad for p in train_mod._dedup_params(run.student, run.meth) if p.grad is not None]
    assert run.student.out.weight.grad is not None and all(g.is_meta for g in grads)
    if method["type"] == "dllm2rec":  # the projector of the teacher's embeddings is trained too
        assert all(p.grad is not None for p in run.meth.projector.parameters())


def test_a_failing_compilation_falls_back_to_the_eager_step(tmp_path, monkeypatch, capsys):
    """torch.compile failing at the first call (a driver, memory, an unsupported op) costs one log
    line and nothing else: the run trains with the eager step and gives the eager run's result."""
    write_synthetic_dataset(tmp_path / "data", n_items=60, n_sequences=300, p_rule=0.5, seed=0)
    write_synthetic_teacher(tmp_path / "teacher", tmp_path / "data", topn=10, width=8, quality=1.0, rule_seed=0)

    def broken_compile(fn, **kwargs):
        def step(*args):
            raise RuntimeError("CUDA graph capture failed: out of memory\n(details)")
        return step

    runs = {}
    for compiled in (False, True):
        if compiled:
            monkeypatch.setattr(torch, "compile", broken_compile)
        params = {"student": {**STUDENT, "compile": compiled}, "method": DLLM2REC}
        runs[compiled] = train_student(str(tmp_path / "data"), "dros", "dllm2rec", params, 0,
                                       str(tmp_path / f"out-{compiled}"), str(tmp_path / f"work-{compiled}"),
                                       teacher=str(tmp_path / "teacher"), threads=1)
    err = capsys.readouterr().err
    assert err.count("the compiled student step (student.compile) failed (RuntimeError: CUDA graph capture "
                     "failed: out of memory); using the eager path") == 1
    assert runs[True]["test"] == runs[False]["test"] and runs[True]["valid"] == runs[False]["valid"]
