"""Teacher coverage: the teacher generates for a seeded subset of the training sequences and the
students distil only on the rows that have teacher output (docs/teacher.md, "Teacher coverage")."""
import shutil

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

import dllm2rec.student.train as train_mod
from dllm2rec.dataset import load_dataset
from dllm2rec.distill.base import Batch
from dllm2rec.distill.teacher_data import load_teacher
from dllm2rec.io import UserError, write_parquet
from dllm2rec.settings import GenerationSettings
from dllm2rec.student.train import load_sequences, train_student
from dllm2rec.teacher import coverage
from dllm2rec.teacher.generate import coverage_info, shard_rows
from synthetic import write_synthetic_dataset, write_synthetic_teacher
from workflow_utils import copy_project, load_yaml, snakemake, write_config

STUDENT = {"hidden": 16, "dropout": 0.1, "lr": 0.005, "batch_size": 64, "weight_decay": 1e-6, "epochs": 3,
           "patience": 10, "eval_batch_size": 256, "device": "cpu", "backbone": {}}
DLLM2REC = {"type": "dllm2rec", "variant": "paper", "lambda_d": 0.5, "k": 5, "beta": 1.0, "gamma_p": 0.3,
            "gamma_c": 0.5, "gamma_o": 0.1, "ed_weight": 0.3, "projector": "linear", "ranking": True,
            "use_wp": True, "use_wc": True, "use_wo": True, "embedding": True, "offset": True}


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    root = tmp_path_factory.mktemp("coverage")
    write_synthetic_dataset(root / "data", n_items=50, n_sequences=400, p_rule=0.5, seed=0)
    write_synthetic_teacher(root / "teacher", root / "data", topn=20, width=8, quality=1.0, rule_seed=0)
    return root


def with_coverage(src, dst, value, seed=0):
    """A copy of the teacher ``src`` whose train files hold only the rows ``value`` covers and
    declare it in their metadata, as teacher/generate.py writes them."""
    shutil.copytree(src, dst)
    ids = np.sort(load_dataset(src.parent / "data").split("train").column("seq_id").to_numpy())
    keep = ids[coverage.covered_positions(len(ids), value, seed)]
    info = {"train_coverage": value, "seed": seed, "n_rows": len(ids), "n_covered": len(keep)}
    for part in ("ranks", "generated_embeddings"):
        path = dst / part / "train.parquet"
        table = pq.read_table(path)
        table = table.filter(np.isin(table.column("seq_id").to_numpy(), keep))
        write_parquet(table, path, metadata={"coverage": info})
    return keep


# --- which rows -------------------------------------------------------------------------------
def test_covered_positions_values_and_errors():
    assert np.array_equal(coverage.covered_positions(7, "all"), np.arange(7))
    five = coverage.covered_positions(20, 5, seed=3)
    assert len(five) == 5 and len(set(five)) == 5 and np.all(np.diff(five) > 0) and five.max() < 20
    assert np.array_equal(five, coverage.covered_positions(20, 5, seed=3))  # seeded
    assert not np.array_equal(five, coverage.covered_positions(20, 5, seed=4))
    assert len(coverage.covered_positions(20, 0.25)) == 5
    assert len(coverage.covered_positions(20, 0.01)) == 1  # at least one
    assert np.array_equal(coverage.covered_positions(20, 1.0), np.arange(20))
    assert np.array_equal(coverage.covered_positions(20, 20), np.arange(20))
    for bad in (0, -3, 1.5, 0.0, "half", True):
        with pytest.raises(UserError, match="train_coverage"):
            coverage.parse_coverage(bad)
    with pytest.raises(UserError, match="only 20 sequences"):
        coverage.covered_positions(20, 21)


def test_shards_generate_only_the_covered_train_rows(synth):
    ds = load_dataset(synth / "data")
    train = ds.split("train", by_seq_id=True)
    all_ids = train.column("seq_id").to_numpy()
    # "all" deals out exactly the rows it always did: split row r to shard r % shards + 1
    for shard in (1, 2, 3):
        got = shard_rows(ds, "train", shard, 3, "all").column("seq_id").to_numpy()
        assert np.array_equal(got, all_ids[shard - 1::3])
        assert np.array_equal(got, shard_rows(ds, "train", shard, 3).column("seq_id").to_numpy())
    covered = np.concatenate([shard_rows(ds, "train", s, 3, 40, 1).column("seq_id").to_numpy() for s in (1, 2, 3)])
    assert np.array_equal(np.sort(covered), all_ids[coverage.covered_positions(len(all_ids), 40, 1)])
    # valid and test are always complete
    valid = np.concatenate([shard_rows(ds, "valid", s, 2, 40, 1).column("seq_id").to_numpy() for s in (1, 2)])
    assert np.array_equal(np.sort(valid), np.sort(ds.split("valid").column("seq_id").to_numpy()))
    assert coverage_info(ds, "train", GenerationSettings(train_coverage=40, train_coverage_seed=1))["n_covered"] == 40
    assert coverage_info(ds, "valid", GenerationSettings(train_coverage=40))["train_coverage"] == "all"
    with pytest.raises(UserError, match="fewer than the 3 teacher shards"):
        shard_rows(ds, "train", 1, 3, 2)


# --- the student side: which rows are read --------------------------------------------------
def test_load_teacher_joins_the_covered_rows_and_marks_them(synth, tmp_path):
    keep = with_coverage(synth / "teacher", tmp_path / "t", 0.25, seed=2)
    n, _, splits = load_sequences(synth / "data")
    ids = splits["train"].seq_id
    full = load_teacher(synth / "teacher", {"train": ids}, n).splits["train"]
    part = load_teacher(tmp_path / "t", {"train": ids}, n).splits["train"]
    assert full.covered is None
    mask = part.covered.numpy()
    assert set(ids[mask].tolist()) == set(keep.tolist())
    assert mask.sum() == len(keep) == round(0.25 * len(ids))
    # the covered rows hold exactly the teacher's output for those sequences, in the student's order
    assert torch.equal(part.topk_items, full.topk_items[torch.from_numpy(mask)])
    assert torch.equal(part.target_dist, full.target_dist[torch.from_numpy(mask)])
    assert torch.equal(part.gen_emb, full.gen_emb[torch.from_numpy(mask)])


def test_a_subset_without_a_coverage_declaration_is_still_an_error(synth, tmp_path):
    shutil.copytree(synth / "teacher", tmp_path / "t")
    path = tmp_path / "t" / "ranks" / "train.parquet"
    table = pq.read_table(path)
    pq.write_table(table.slice(0, 10), path)  # rows lost, no coverage recorded: not this dataset's teacher
    n, _, splits = load_sequences(synth / "data")
    with pytest.raises(UserError, match="are missing"):
        load_teacher(tmp_path / "t", {"train": splits["train"].seq_id}, n, parts=["ranks"])


# --- the trainer: no distillation loss without teacher output -------------------------------
def prepared(data, teacher, method=DLLM2REC, seed=0):
    params = {"student": STUDENT, "method": method}
    return train_mod._prepare(str(data), "gru4rec", method["type"], params, seed, str(teacher), "cpu")


def forward(run, rows):
    tr = run.splits["train"]
    gen = torch.Generator().manual_seed(5)
    neg = torch.randint(0, run.n_items, (len(rows),), generator=gen)
    batch = Batch("train", rows, tr.history[rows], tr.lengths[rows], tr.target[rows], neg)
    scores, state, _ = train_mod.step_forward(run.student, run.meth, batch)
    return batch, state, scores


def test_rows_without_teacher_output_get_no_distillation_loss(synth, tmp_path):
    # the official variant's weights are per row (no statistics over the train rows), so the
    # method built on the covered rows and the one built on every row agree row by row
    method = {**DLLM2REC, "variant": "official"}
    with_coverage(synth / "teacher", tmp_path / "t", 0.5, seed=1)
    part, full = prepared(synth / "data", tmp_path / "t", method), prepared(synth / "data", synth / "teacher", method)
    for a, b in zip(part.student.parameters(), full.student.parameters()):
        assert torch.equal(a, b)
    covered = part.covered
    rows = torch.arange(0, 64)
    assert 0 < int(covered[rows].sum()) < 64
    batch, state, scores = forward(part, rows)
    scores.retain_grad()
    dist = train_mod._distill_loss(part, batch, scores, state, epoch=0)
    dist.backward(retain_graph=True)
    # uncovered rows: zero gradient; covered rows: a real one
    assert torch.all(scores.grad[~covered[rows]] == 0)
    assert torch.all(scores.grad[covered[rows]].abs().sum(1) > 0)
    # garbage in the uncovered rows (their scores and states) leaves the loss unchanged
    junk = ~covered[rows]
    scores2 = scores.detach().clone()
    scores2[junk] = torch.randn(int(junk.sum()), scores.shape[1]) * 1e3
    state2 = state.detach().clone()
    state2[junk] = torch.nan
    assert torch.equal(train_mod._distill_loss(part, batch, scores2, state2, 0), dist.detach())
    # and the value is the covered sub-batch alone (as the teacher covering every row scores it),
    # scaled by its share of the batch
    keep = covered[rows]
    sub = Batch("train", rows[keep], batch.history[keep], batch.lengths[keep], batch.target[keep], batch.negative[keep])
    fb, fstate, fscores = forward(full, rows)
    alone = full.meth.loss(sub, fscores[keep], fstate[keep], full.student, 0)
    assert torch.allclose(dist.detach(), alone.detach() * keep.float().mean(), rtol=1e-6, atol=0)
    # a batch with no covered row has no distillation term at all
    none_rows = torch.nonzero(~covered).flatten()[:8]
    b0, s0, sc0 = forward(part, none_rows)
    assert float(train_mod._distill_loss(part, b0, sc0, s0, 0)) == 0.0


def train(data, teacher, out, method=DLLM2REC):
    return train_student(str(data), "gru4rec", method["type"], {"student": STUDENT, "method": method}, 0,
                         str(out / "out"), str(out / "work"), teacher=str(teacher), threads=1)


def test_coverage_all_reproduces_the_complete_teacher_bit_for_bit(synth, tmp_path, monkeypatch):
    base = train(synth / "data", synth / "teacher", tmp_path / "plain")
    # the files as the teacher now writes them with `all` (and a fraction that covers every row)
    for value in ("all", 1.0):
        with_coverage(synth / "teacher", tmp_path / f"t-{value}", value)
        m = train(synth / "data", tmp_path / f"t-{value}", tmp_path / f"run-{value}")
        assert m["valid"] == base["valid"] and m["test"] == base["test"], value
    # the masked path itself, forced with every row covered, is exact too
    real = train_mod._covered_rows

    def every_row(tt, tr):
        tt.splits["train"].covered = torch.ones(len(tr.target), dtype=torch.bool)
        return real(tt, tr)

    monkeypatch.setattr(train_mod, "_covered_rows", every_row)
    forced = train(synth / "data", synth / "teacher", tmp_path / "forced")
    assert forced["valid"] == base["valid"] and forced["test"] == base["test"]


@pytest.mark.parametrize("mtype", ["dllm2rec", "hint", "htd", "rd", "cd", "rrd", "dcd", "unkd", "kar", "llmcf"])
def test_every_method_trains_on_the_covered_rows_or_refuses(synth, tmp_path, mtype):
    with_coverage(synth / "teacher", tmp_path / "t", 0.4)
    method = {"type": mtype}
    student = {**STUDENT, "epochs": 1}

    def fit(teacher, name):
        return train_student(str(synth / "data"), "gru4rec", mtype, {"student": student, "method": method}, 0,
                             str(tmp_path / name / "out"), str(tmp_path / name / "work"), teacher=str(teacher), threads=1)

    if mtype == "llmcf":  # its model reads every training row's teacher output
        with pytest.raises(UserError, match="needs teacher output for every training sequence"):
            fit(tmp_path / "t", "part")
        return
    m = fit(tmp_path / "t", "part")
    assert np.isfinite(m["test"]["NDCG@20"])
    # item-side only (Hint, HTD), or per-user and per-item knowledge (KAR): coverage changes nothing
    if mtype in ("hint", "htd", "kar"):
        assert m["test"] == fit(synth / "teacher", "full")["test"]


def test_partial_coverage_trains_and_refuses_llmcf(synth, tmp_path):
    with_coverage(synth / "teacher", tmp_path / "t", 0.3)
    base = train(synth / "data", synth / "teacher", tmp_path / "plain")
    m = train(synth / "data", tmp_path / "t", tmp_path / "part")
    assert np.isfinite(m["test"]["NDCG@20"]) and m["test"] != base["test"]
    llmcf = {"type": "llmcf", "encoder": "teacher", "n_neighbors": 2, "n_layers": 1}
    with pytest.raises(UserError, match="needs teacher output for every training sequence"):
        train(synth / "data", tmp_path / "t", tmp_path / "llmcf", llmcf)


# --- config time ------------------------------------------------------------------------------
def test_config_checks_coverage_and_passes_it_to_train_shards_only(tmp_path):
    project = copy_project(tmp_path)
    cfg = load_yaml(project / "config.yaml")
    teacher = cfg["tables"]["teacher"]
    cfg["teachers"][teacher]["generation"]["train_coverage"] = 0.5
    write_config(project / "llmcf.yaml", cfg)
    res = snakemake(project, "-n", "--cores", "1", "--configfile", "llmcf.yaml")
    assert res.returncode != 0
    assert "method 'llmcf' needs teacher output for every training sequence" in res.stdout, res.stdout[-2000:]
    cfg["tables"]["methods"] = ["none", "dllm2rec"]
    write_config(project / "half.yaml", cfg)
    res = snakemake(project, "results/table5.csv", "-n", "-p", "--cores", "1", "--configfile", "half.yaml")
    assert res.returncode == 0, res.stdout[-3000:]
    shards = [line for line in res.stdout.splitlines() if "teacher-shard" in line]
    assert shards and all(("train_coverage" in line) == ("--split train" in line) for line in shards)
    cfg["teachers"][teacher]["generation"]["train_coverage"] = 1.5
    write_config(project / "bad.yaml", cfg)
    res = snakemake(project, "-n", "--cores", "1", "--configfile", "bad.yaml")
    assert res.returncode != 0 and "train_coverage" in res.stdout
