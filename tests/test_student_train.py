"""The trainer: it learns, selects on validation only, stops early, resumes, writes its artifacts."""
import csv
import json

import pytest
import torch

import dllm2rec.student.train as train_mod
from dllm2rec import resume
from dllm2rec.cli import main as cli_main
from dllm2rec.evaluate import KS, popularity_metrics
from dllm2rec.student.train import load_sequences, train_student
from dllm2rec.student_run import load_student
from synthetic import write_synthetic_dataset, write_synthetic_teacher

STUDENT = {"hidden": 32, "dropout": 0.1, "lr": 0.005, "batch_size": 64, "weight_decay": 1e-6, "epochs": 20,
           "patience": 10, "eval_batch_size": 256, "device": "cpu"}
BACKBONES = {"gru4rec": {}, "sasrec": {"num_heads": 1, "num_blocks": 1},
             "dros": {"num_heads": 1, "num_blocks": 1, "alpha": 1.0, "beta": 1.0, "ps_power": 0.05}}
DLLM2REC = {"type": "dllm2rec", "variant": "paper", "lambda_d": 0.3, "k": 3, "beta": 1.0, "gamma_p": 0.3,
            "gamma_c": 0.5, "gamma_o": 0.1, "ed_weight": 0.3, "projector": "linear", "ranking": True,
            "use_wp": True, "use_wc": True, "use_wo": True, "embedding": True, "offset": True}
NONE = {"type": "none"}


def params(backbone, method, **student):
    return {"student": {**STUDENT, **student, "backbone": BACKBONES[backbone]}, "method": method}


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth")
    # a planted next-item rule, followed half of the time; little data, so a teacher that knows
    # the rule has something to teach
    write_synthetic_dataset(root / "data", n_items=100, n_sequences=1000, p_rule=0.5, seed=0)
    write_synthetic_teacher(root / "teacher", root / "data", topn=20, width=16, quality=1.0, rule_seed=0)
    return root


def run(synth, tmp_path, backbone, method, name, seed=0, teacher=True, **student):
    out, work = tmp_path / name / "out", tmp_path / name / "work"
    m = train_student(str(synth / "data"), backbone, method["type"], params(backbone, method, **student), seed,
                      str(out), str(work), teacher=str(synth / "teacher") if teacher else None, threads=1)
    return m, out, work


def test_students_beat_popularity_and_dllm2rec_beats_none(synth, tmp_path):
    n, _, splits = load_sequences(synth / "data")
    pop = popularity_metrics(torch.bincount(splits["train"].target, minlength=n), splits["test"].target)
    results = {}
    for bb in ("gru4rec", "sasrec", "dros"):
        results[bb, "none"] = run(synth, tmp_path, bb, NONE, f"{bb}-none", teacher=False)[0]
        assert results[bb, "none"]["test"]["NDCG@20"] > 2 * pop["NDCG@20"], bb
    for bb in ("gru4rec", "dros"):
        results[bb, "dllm2rec"] = run(synth, tmp_path, bb, DLLM2REC, f"{bb}-dllm2rec")[0]
        # valid and test pooled: GRU4Rec's lift on the test split alone is within its noise
        # (0.4454 vs 0.4447 with w^o normalised per row; 0.4429 with Eq. 8's indicator / K), on valid it is clear
        pooled = {m: sum(results[bb, m][split]["NDCG@20"] for split in ("valid", "test")) for m in ("dllm2rec", "none")}
        assert pooled["dllm2rec"] > pooled["none"] + 0.02, (bb, pooled)
    off = run(synth, tmp_path, "dros", {**DLLM2REC, "variant": "official"}, "dros-official")[0]
    assert off["test"]["NDCG@20"] > results["dros", "none"]["test"]["NDCG@20"]


def test_artifacts(synth, tmp_path):
    m, out, work = run(synth, tmp_path, "sasrec", DLLM2REC, "art", epochs=3)
    on_disk = json.loads((out / "metrics.json").read_text())
    assert on_disk["test"] == pytest.approx(m["test"])
    assert set(on_disk) == {"valid", "test", "best_epoch", "epochs_run", "train_seconds", "inference_seconds",
                            "dataset", "teacher", "backbone", "method", "params", "seed", "n_params"}
    keys = {f"{k}@{K}" for k in ("HR", "NDCG") for K in KS}
    assert set(on_disk["valid"]) == keys and set(on_disk["test"]) == keys
    assert on_disk["epochs_run"] == 3 and on_disk["backbone"] == "sasrec" and on_disk["method"] == "dllm2rec"
    assert on_disk["dataset"] == "data" and on_disk["params"]["method"] == DLLM2REC  # identity: the folder's name
    rows = list(csv.DictReader((out / "train_log.csv").open()))
    assert [r["epoch"] for r in rows] == ["1", "2", "3"]
    assert list(rows[0]) == ["epoch", "loss", "rec_loss", "distill_loss", "valid_HR@20", "valid_NDCG@20", "seconds",
                            "valid_seconds"]
    assert float(rows[0]["distill_loss"]) > 0
    assert not (work / "checkpoint.pt").exists()
    # model.pt is self-describing: it reproduces the test metrics without the teacher
    student, table, _ = load_student(out / "model.pt")
    _, _, splits = load_sequences(synth / "data")
    from dllm2rec.distill.base import DistillMethod
    from dllm2rec.evaluate import evaluate

    class Fixed(DistillMethod):
        def item_table(self, s):
            return table

    te = splits["test"]
    again = evaluate(student, Fixed({}, None, student), "test", te.history, te.lengths, te.target)
    assert again == pytest.approx(m["test"])


def test_selection_uses_validation_only(synth, tmp_path, monkeypatch):
    """Valid and test disagree on the best epoch: the trainer must follow valid, test once."""
    calls = []
    valid_curve = {1: 0.1, 2: 0.5, 3: 0.2, 4: 0.15, 5: 0.1, 6: 0.05}
    test_curve = {1: 0.1, 2: 0.1, 3: 0.2, 4: 0.9, 5: 0.1, 6: 0.1}

    def fake_evaluate(student, method, split, history, lengths, target, batch_size=1024, ks=KS):
        calls.append(split)
        epoch = calls.count("valid") if split == "valid" else None
        # a trainer that looked at test every epoch would see test_curve and pick epoch 4
        v = valid_curve[epoch] if split == "valid" else test_curve[calls.count("test")]
        return {f"{k}@{K}": v for k in ("HR", "NDCG") for K in ks}

    monkeypatch.setattr(train_mod, "evaluate", fake_evaluate)
    m, _, _ = run(synth, tmp_path, "gru4rec", NONE, "sel", teacher=False, epochs=6, patience=3)
    assert m["best_epoch"] == 2  # by test metrics it would be 4
    assert m["epochs_run"] == 5  # 3 epochs without improvement after epoch 2
    assert calls.count("test") == 1 and calls[-1] == "test"
    assert m["valid"]["NDCG@20"] == 0.5 and m["test"]["NDCG@20"] == test_curve[1]  # the one test call


@pytest.mark.parametrize("method", [DLLM2REC, {"type": "rrd"}, {"type": "cd"}, {"type": "dcd"}, {"type": "htd"}],
                         ids=["dllm2rec", "rrd", "cd", "dcd", "htd"])
def test_resume_after_kill_matches_uninterrupted(synth, tmp_path, monkeypatch, method):
    """Also for methods that sample with their own generators (RRD, CD, DCD, HTD) and for DCD's cached
    discrepancies (refreshed every 3 epochs; the kill falls inside a cycle): those are checkpointed too."""
    full, out_a, _ = run(synth, tmp_path, "dros", method, "a", epochs=4)
    monkeypatch.setattr(resume, "STUDENT_CHECKPOINT_SECONDS", 0)  # a checkpoint after every epoch

    class Killed(Exception):
        pass

    def kill(epoch):
        if epoch == 2:
            raise Killed

    monkeypatch.setattr(train_mod, "_on_checkpoint", kill)
    with pytest.raises(Killed):
        run(synth, tmp_path, "dros", method, "b", epochs=4)
    assert (tmp_path / "b" / "work" / "checkpoint.pt").exists() and not (tmp_path / "b" / "out" / "metrics.json").exists()
    monkeypatch.setattr(train_mod, "_on_checkpoint", lambda epoch: None)
    resumed, out_b, _ = run(synth, tmp_path, "dros", method, "b", epochs=4)
    for k in ("valid", "test", "best_epoch", "epochs_run", "n_params"):
        assert resumed[k] == full[k], k
    log = lambda out: [{k: v for k, v in r.items() if "seconds" not in k} for r in csv.DictReader((out / "train_log.csv").open())]
    assert log(out_a) == log(out_b)


def test_a_run_checkpoints_at_most_every_so_often(synth, tmp_path, monkeypatch):
    """Epochs much shorter than resume.STUDENT_CHECKPOINT_SECONDS: no checkpoint after each of them."""
    written = []
    monkeypatch.setattr(train_mod, "_on_checkpoint", written.append)
    monkeypatch.setattr(resume, "STUDENT_CHECKPOINT_SECONDS", 3600)
    m, _, _ = run(synth, tmp_path, "gru4rec", NONE, "rare", teacher=False, epochs=3)
    assert m["epochs_run"] == 3 and written == []
    monkeypatch.setattr(resume, "STUDENT_CHECKPOINT_SECONDS", 0)
    run(synth, tmp_path, "gru4rec", NONE, "every", teacher=False, epochs=3)
    assert written == [1, 2, 3]


def test_fused_adam_is_torch_adam_bit_for_bit():
    """dllm2rec/student/optim.py makes torch.optim.Adam(fused=True)'s calls: same parameters after
    every step, also for a parameter whose first gradient comes late, with and without weight decay."""
    from dllm2rec.student.optim import FusedAdam

    def model():
        torch.manual_seed(0)
        return torch.nn.Linear(7, 5), torch.nn.Linear(5, 3)

    for wd in (0.0, 1e-2):
        (a1, a2), (b1, b2) = model(), model()
        ref = torch.optim.Adam([*a1.parameters(), *a2.parameters()], lr=1e-2, weight_decay=wd, fused=True)
        ours = FusedAdam([*b1.parameters(), *b2.parameters()], lr=1e-2, weight_decay=wd)
        gen = torch.Generator().manual_seed(1)
        for step in range(12):
            x = torch.randn(16, 7, generator=gen)
            for m1, m2, opt in ((a1, a2, ref), (b1, b2, ours)):
                opt.zero_grad(set_to_none=True)
                y = m1(x)
                (y.pow(2).mean() + (m2(y).sum() if step >= 4 else 0)).backward()  # m2 joins at step 4
                opt.step()
            assert all(torch.equal(p, q) for p, q in zip([*a1.parameters(), *a2.parameters()],
                                                         [*b1.parameters(), *b2.parameters()])), (wd, step)
        assert not torch.equal(a1.weight, model()[0].weight)  # it trained


def test_cli_and_errors(synth, tmp_path):
    out = tmp_path / "cli"
    rc = cli_main(["train-student", "--data", str(synth / "data"), "--backbone", "gru4rec", "--method", "none",
                   "--params", json.dumps(params("gru4rec", NONE, epochs=1)), "--seed", "1", "--out", str(out),
                   "--work", str(tmp_path / "cliwork"), "--threads", "1"])
    assert rc == 0 and json.loads((out / "metrics.json").read_text())["seed"] == 1
    # dllm2rec without a teacher, and a teacher of another dataset, are clear errors
    assert cli_main(["train-student", "--data", str(synth / "data"), "--backbone", "gru4rec", "--method", "dllm2rec",
                     "--params", json.dumps(params("gru4rec", DLLM2REC, epochs=1)), "--seed", "0", "--out",
                     str(tmp_path / "x"), "--work", str(tmp_path / "xw")]) == 1
    other = tmp_path / "other"
    write_synthetic_dataset(other / "data", n_items=100, n_sequences=900, seed=5)
    write_synthetic_teacher(other / "teacher", other / "data", rule_seed=5)
    from dllm2rec.io import UserError

    with pytest.raises(UserError, match="rerun the teacher"):
        train_student(str(synth / "data"), "gru4rec", "dllm2rec", params("gru4rec", DLLM2REC, epochs=1), 0,
                      str(tmp_path / "y"), str(tmp_path / "yw"), teacher=str(other / "teacher"))


def test_ranks_artifact_reproduces_the_metrics(synth, tmp_path):
    import numpy as np
    import pyarrow.parquet as pq

    m, out, _ = run(synth, tmp_path, "gru4rec", NONE, "ranks", teacher=False, epochs=2)
    t = pq.read_table(out / "ranks.parquet").to_pandas()
    assert list(t.columns) == ["split", "seq_id", "target", "rank", "topk"]
    _, _, splits = load_sequences(synth / "data")
    for split in ("valid", "test"):
        part = t[t.split == split]
        assert part.seq_id.tolist() == splits[split].seq_id.tolist()
        rank = part["rank"].to_numpy()  # 1-based
        assert rank.min() >= 1
        assert np.mean(rank <= 20) == pytest.approx(m[split]["HR@20"])
        assert np.mean(np.where(rank <= 20, 1 / np.log2(rank + 1), 0)) == pytest.approx(m[split]["NDCG@20"])
        topk = np.stack(part.topk.to_numpy())
        assert topk.shape == (len(part), 20)
        # a target ranked r <= 20 sits at position r in the top-20 list (ties aside: random floats)
        top = rank <= 20
        assert (topk[top, rank[top] - 1] == part.target.to_numpy()[top]).all()
        # in memory ranks are 0-based (read_ranks takes the file's 1 off) and give the metrics as well
        from dllm2rec import student_run
        from dllm2rec.evaluate import metrics_from_ranks

        read = student_run.read_ranks(out / "ranks.parquet", split)
        assert read.rank == (rank - 1).tolist() and read.identity["seed"] == m["seed"]
        assert metrics_from_ranks(read.rank) == m[split]
