"""Fused training (dllm2rec/student/fused.py): a member of a stacked group computes what its own
run computes, keeps its own selection and stopping, resumes, and the groups are planned right."""
import json
from pathlib import Path

import pytest
import torch

import dllm2rec.student.train as T
from dllm2rec import resume
from dllm2rec.distill.base import Batch
from dllm2rec.student import fused as F
from dllm2rec.student_groups import Run, plan_groups
from synthetic import write_synthetic_dataset, write_synthetic_teacher

STUDENT = {"hidden": 32, "dropout": 0.1, "lr": 0.005, "batch_size": 64, "weight_decay": 1e-6, "epochs": 6,
           "patience": 10, "eval_batch_size": 256}
BACKBONES = {"gru4rec": {}, "sasrec": {"num_heads": 1, "num_blocks": 1},
             "dros": {"num_heads": 1, "num_blocks": 1, "alpha": 1.0, "beta": 1.0, "ps_power": 0.05}}
DLLM2REC = {"type": "dllm2rec", "lambda_d": 0.3, "k": 3}


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    root = tmp_path_factory.mktemp("fused")
    write_synthetic_dataset(root / "data", n_items=80, n_sequences=600, p_rule=0.5, seed=0)
    write_synthetic_teacher(root / "teacher", root / "data", topn=20, width=16, quality=1.0, rule_seed=0)
    return root


def member(tmp, backbone, method, name, seed=0, **student):
    params = {"student": {**STUDENT, **student, "backbone": BACKBONES[backbone]}, "method": method}
    return {"method": name, "params": params, "seed": seed, "out": str(tmp / name / f"seed{seed}")}


def group(synth, tmp, backbone, members, work="work"):
    return F.train_group(str(synth / "data"), backbone, members, str(tmp / work), teacher=str(synth / "teacher"),
                         threads=1)


def modules(synth, backbone, m):
    inputs = T.load_inputs(str(synth / "data"), m["method"], m["params"]["method"], str(synth / "teacher"))
    return inputs, T.build_run(inputs, backbone, m["method"], m["params"], m["seed"], torch.device("cpu"))


@pytest.mark.parametrize("backbone,variant", [("dros", "paper"), ("dros", "official"), ("gru4rec", "paper"),
                                              ("sasrec", None), ("sasrec", "rd"), ("gru4rec", "cd")])
def test_a_stacked_members_loss_and_gradients_equal_its_own_models(synth, tmp_path, backbone, variant):
    """On a fixed batch (dropout 0): each member's loss and every parameter's gradient, computed
    stacked under vmap, equal those of the member's own modules computed eagerly."""
    weight = {"rd": "lambda_kd", "cd": "lambda_kd"}.get(variant, "lambda_d")
    method = {"type": "none"} if variant is None else {"type": variant} if variant in ("rd", "cd") else \
        {**DLLM2REC, "variant": variant}
    ms = [member(tmp_path, backbone, method if variant is None else {**method, weight: lam}, f"m{i}", seed=s,
                 dropout=0.0, weight_decay=wd)
          for i, (lam, wd, s) in enumerate([(0.3, 1e-6, 0), (0.9, 0.0, 0), (0.5, 1e-4, 1)])]
    runs = []
    for m in ms:
        inputs, run = modules(synth, backbone, m)
        runs.append(run)
    trainer = F.GroupTrainer(runs, [F.Member(m["method"], m["params"], m["seed"], Path(m["out"])) for m in ms])
    tr = runs[0].splits["train"]
    rows = torch.arange(40, 104).view(1, -1).expand(3, -1)
    neg = (tr.target[rows] + 7) % runs[0].n_items
    args = ("train", rows, tr.history[rows], tr.lengths[rows], tr.target[rows], neg)
    trainer.group.template.meth.batch_items = torch.unique(tr.history[rows[0]])[:-1] if variant else None
    # RD from its dynamic_start_epoch on: its weights read the student's own ranks
    epoch = runs[0].meth.dynamic_start_epoch if variant == "rd" else 0
    losses = trainer.group.call("train", (0, 0, 0, 0, 0), *args, epoch=epoch, noise=None)
    losses[:, 0].sum().backward()
    for j, run in enumerate(runs):
        run.student.stacked = False
        batch = Batch("train", rows[j], tr.history[rows[j]], tr.lengths[rows[j]], tr.target[rows[j]], neg[j])
        pair = F.Pair(run.student, run.meth)
        want = pair("train", batch, epoch)
        assert torch.allclose(losses[j].detach(), want.detach(), atol=1e-6, rtol=1e-5), (j, losses[j], want)
        want[0].backward()
        for name, p in pair.named_parameters():
            assert torch.allclose(trainer.group.params[name].grad[j], p.grad, atol=1e-6, rtol=1e-4), (j, name)


@pytest.mark.parametrize("backbone", ["dros", "gru4rec"])
def test_a_member_of_a_group_trains_as_it_would_alone(synth, tmp_path, backbone):
    """Same selected epochs and metrics, in a group of three or in a group of its own (random
    streams are per member, so only the order of float sums in batched kernels differs)."""
    ms = [member(tmp_path / "g", backbone, {**DLLM2REC, "lambda_d": lam}, f"m{i}", seed=s, weight_decay=wd)
          for i, (lam, wd, s) in enumerate([(0.3, 1e-6, 0), (0.9, 0.0, 0), (0.3, 1e-4, 1)])]
    together = group(synth, tmp_path, backbone, ms)
    alone = [group(synth, tmp_path, backbone, [{**m, "out": m["out"] + "-alone"}], work=f"w{i}")[0]
             for i, m in enumerate(ms)]
    for a, b in zip(together, alone):
        assert a["best_epoch"] == b["best_epoch"] and a["epochs_run"] == b["epochs_run"]
        for split in ("valid", "test"):
            for k, v in a[split].items():
                assert v == pytest.approx(b[split][k], abs=1e-6), (split, k)
    # the members differ from each other (their own lambda_d, weight decay, seed)
    assert len({m["valid"]["NDCG@20"] for m in together}) == 3
    # each member's run folder is the usual one, its identity its own
    out = json.loads((Path(ms[1]["out"]) / "metrics.json").read_text())
    assert out["method"] == "m1" and out["params"]["method"]["lambda_d"] == 0.9 and out["seed"] == 0
    assert (Path(ms[1]["out"]) / "model.pt").exists() and (Path(ms[1]["out"]) / "ranks.parquet").exists()


def test_members_stop_on_their_own_and_stopped_members_are_frozen(synth, tmp_path):
    """Patience counts per member: a member with a learning rate too small to improve stops first,
    keeps its best epoch, and the others train on."""
    ms = [member(tmp_path, "sasrec", {"type": "none"}, "fast", lr=0.005, epochs=12, patience=3),
          member(tmp_path, "sasrec", {"type": "none"}, "frozen", lr=1e-9, epochs=12, patience=3)]
    fast, frozen = group(synth, tmp_path, "sasrec", ms)
    assert frozen["epochs_run"] < fast["epochs_run"]
    assert frozen["epochs_run"] == frozen["best_epoch"] + 3
    log = (Path(ms[1]["out"]) / "train_log.csv").read_text().splitlines()
    assert len(log) == 1 + frozen["epochs_run"]


def test_a_killed_group_resumes_to_the_same_result(synth, tmp_path, monkeypatch):
    ms = [member(tmp_path / "a", "dros", {**DLLM2REC, "lambda_d": lam}, f"m{i}") for i, lam in enumerate((0.3, 0.6))]
    whole = group(synth, tmp_path, "dros", ms, work="w-whole")

    def kill(epoch):
        if epoch == 3:
            raise KeyboardInterrupt

    ms2 = [{**m, "out": m["out"] + "-resumed"} for m in ms]
    monkeypatch.setattr(resume, "STUDENT_CHECKPOINT_SECONDS", 0)  # a checkpoint after every epoch
    monkeypatch.setattr(T, "_on_checkpoint", kill)
    with pytest.raises(KeyboardInterrupt):
        group(synth, tmp_path, "dros", ms2, work="w-killed")
    monkeypatch.setattr(T, "_on_checkpoint", lambda epoch: None)
    resumed = group(synth, tmp_path, "dros", ms2, work="w-killed")
    for a, b in zip(whole, resumed):
        assert a["best_epoch"] == b["best_epoch"] and a["test"] == b["test"] and a["valid"] == b["valid"]


def test_a_method_that_cannot_run_stacked_trains_its_members_one_by_one(synth, tmp_path):
    rrd = {"type": "rrd", "lambda_kd": 0.01, "k": 5, "l": 5}
    ms = [member(tmp_path, "gru4rec", rrd, "rrd", seed=s) for s in (0, 1)]
    out = group(synth, tmp_path, "gru4rec", ms)
    alone = T.train_student(str(synth / "data"), "gru4rec", "rrd", ms[1]["params"], 1, str(tmp_path / "alone"),
                            str(tmp_path / "w-alone"), teacher=str(synth / "teacher"), threads=1)
    assert out[1]["test"] == alone["test"] and out[1]["best_epoch"] == alone["best_epoch"]


def test_groups_are_planned_by_what_may_differ_within_one():
    def run(method, cfg, seed=0, base=None, **student):
        params = {"student": {**STUDENT, **student, "backbone": {}}, "method": cfg}
        return Run("ds", "t", "gru4rec", method, base or method, seed, params)

    runs = [run(f"dllm2rec@lambda_d={lam},weight_decay={wd}", {**DLLM2REC, "lambda_d": lam}, s, "dllm2rec",
                weight_decay=wd) for lam in (0.1, 0.5) for wd in (0.0, 1e-6) for s in (0, 1)]
    runs += [run(f"dllm2rec@k={k}", {**DLLM2REC, "k": k}, 0, "dllm2rec") for k in (4, 5)]  # k changes shapes
    runs += [run("rrd", {"type": "rrd"}, s) for s in (0, 1, 2)]
    groups = plan_groups(runs, max_members=64)
    stacked = [g for g in groups if g.stacked]
    assert sorted(len(g.runs) for g in stacked) == [1, 1, 8]  # the lambda_d x weight_decay x seed points together
    assert [len(g.runs) for g in groups if not g.stacked] == [3]  # rrd: one after another, one job
    assert len({g.name for g in groups}) == len(groups)
    capped = plan_groups(runs, max_members=3)
    assert sorted(len(g.runs) for g in capped if g.stacked) == [1, 1, 2, 3, 3]
    assert sum(len(g.runs) for g in capped) == len(runs)
