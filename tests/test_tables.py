"""Tables assembled from hand-written metrics files: layout, means over seeds, gains."""
import csv
import json

import pytest

from dllm2rec import tables
from dllm2rec.io import UserError


def write_metrics(root, dataset, backbone, method, seed, hr, ndcg, inference=0.5):
    path = root / "students" / dataset / "tch" / backbone / method / f"seed{seed}" / "metrics.json"
    path.parent.mkdir(parents=True)
    test = {f"{m}@{k}": 0.0 for m in ("HR", "NDCG") for k in (1, 5, 10, 20)}
    test.update({"HR@20": hr, "NDCG@20": ndcg})
    path.write_text(json.dumps({"dataset": dataset, "teacher": "tch", "backbone": backbone, "method": method,
                                "params": {}, "seed": seed, "valid": test, "test": test, "best_epoch": 3,
                                "train_seconds": 1.0, "inference_seconds": inference}))
    return str(path)


def write_teacher(root, dataset, hr, ndcg, seconds=100.0):
    path = root / "teacher" / dataset / "tch" / "metrics.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"dataset": dataset, "teacher": "tch", "test": {"HR@20": hr, "NDCG@20": ndcg},
                                "inference_seconds": seconds, "n_test": 10}))
    return str(path)


def read(path):
    with open(path) as f:
        return list(csv.reader(f))


def test_table5_means_over_seeds_and_gains(tmp_path):
    students = [
        write_metrics(tmp_path, "ds", "sasrec", "none", 0, 0.10, 0.04),
        write_metrics(tmp_path, "ds", "sasrec", "none", 1, 0.20, 0.06),
        write_metrics(tmp_path, "ds", "sasrec", "dllm2rec", 0, 0.30, 0.10),
        write_metrics(tmp_path, "ds", "sasrec", "rd", 0, 0.25, 0.08),
        write_metrics(tmp_path, "ds", "sasrec", "hint", 0, 0.20, 0.09),
    ]
    teacher = [write_teacher(tmp_path, "ds", 0.12, 0.05)]
    out, seeds = tmp_path / "t5.csv", tmp_path / "t5s.csv"
    tables.table5(teacher=teacher, students=students, methods=["none", "hint", "rd", "dllm2rec"], out=str(out), out_seeds=str(seeds))
    rows = read(out)
    assert rows[0] == ["backbone", "model", "ds:HR@20", "ds:NDCG@20"]
    assert rows[1] == ["Teacher", "BIGRec", "0.1200", "0.0500"]
    assert rows[2] == ["SASRec", "+None", "0.1500", "0.0500"]  # mean of two seeds
    assert [r[1] for r in rows[2:]] == ["+None", "+Hint", "+RD", "+DLLM2Rec", "Gain.S", "Gain.B"]
    assert rows[6][2:] == ["+100.00%", "+100.00%"]  # 0.30 vs 0.15, 0.10 vs 0.05
    # best baseline per column: HR 0.25 (RD), NDCG 0.09 (Hint)
    assert rows[7][2:] == ["+20.00%", "+11.11%"]
    seed_rows = read(seeds)
    none_std = [r for r in seed_rows if r[2] == "none" and r[3] == "std"][0]
    hr20 = seed_rows[0].index("HR@20")
    assert float(none_std[hr20]) == pytest.approx(0.0707, abs=1e-4)


def test_table6_and_ablation(tmp_path):
    students = [
        write_metrics(tmp_path, "ds", "dros", "dllm2rec", 0, 0.30, 0.10, inference=2.0),
        write_metrics(tmp_path, "ds", "dros", "dllm2rec-wo-wc", 0, 0.20, 0.08),
    ]
    teacher = [write_teacher(tmp_path, "ds", 0.15, 0.05, seconds=2000.0)]
    tables.table6(teacher=teacher, students=students[:1], out=str(tmp_path / "t6.csv"))
    rows = read(tmp_path / "t6.csv")
    assert rows[1] == ["ds", "BIGRec", "0.1500", "0.0500", "2000"]
    assert rows[2] == ["ds", "DLLM2Rec (DROS)", "0.3000", "0.1000", "2"]
    assert rows[3] == ["ds", "Gain", "+100.00%", "+100.00%", "+99900.00%"]
    tables.ablation_table(students=students, out=str(tmp_path / "t7.csv"))
    rows = read(tmp_path / "t7.csv")
    assert [r[2] for r in rows[1:]] == ["dllm2rec-wo-wc", "DLLM2Rec"]


def test_table6_without_dllm2rec_is_a_clear_error(tmp_path):
    students = [write_metrics(tmp_path, "ds", "dros", "none", 0, 0.3, 0.1)]
    teacher = [write_teacher(tmp_path, "ds", 0.15, 0.05)]
    with pytest.raises(UserError, match="dllm2rec"):
        tables.table6(teacher=teacher, students=students, out=str(tmp_path / "t6.csv"))


def test_table4(tmp_path):
    stats = tmp_path / "data" / "ds" / "stats.json"
    stats.parent.mkdir(parents=True)
    stats.write_text(json.dumps({"users": 3, "items": 4, "interactions": 6, "density": 0.5, "rows": {"train": 8, "valid": 1, "test": 1}}))
    tables.table4(stats=[str(stats)], out=str(tmp_path / "t4.csv"))
    assert read(tmp_path / "t4.csv")[1] == ["ds", "3", "4", "6", "50.0000%", "8", "1", "1"]


def test_figure2_points_and_png(tmp_path):
    students = [
        write_metrics(tmp_path, "ds", "dros", "dllm2rec", 0, 0.30, 0.10),
        write_metrics(tmp_path, "ds", "dros", "dllm2rec-lambda_d-0.1", 0, 0.20, 0.05),
        write_metrics(tmp_path, "ds", "dros", "dllm2rec-lambda_d-1", 0, 0.25, 0.07),
        write_metrics(tmp_path, "ds", "dros", "dllm2rec-gamma_o-0.5", 0, 0.10, 0.02),
    ]
    png, table = tmp_path / "f2.png", tmp_path / "f2.csv"
    tables.figure2(students=students, dllm2rec={"type": "dllm2rec", "lambda_d": 0.3, "gamma_o": 0.1},
                   out=str(png), out_table=str(table))
    rows = read(table)
    assert rows[0] == ["param", "value", "dataset", "HR@20", "NDCG@20"]
    assert rows[1:] == [
        ["gamma_o", "0.1", "ds", "0.3000", "0.1000"],  # the plain run at its configured value
        ["gamma_o", "0.5", "ds", "0.1000", "0.0200"],
        ["lambda_d", "0.1", "ds", "0.2000", "0.0500"],
        ["lambda_d", "0.3", "ds", "0.3000", "0.1000"],
        ["lambda_d", "1", "ds", "0.2500", "0.0700"],
    ]
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_runs_are_identified_by_their_metrics_not_their_path(tmp_path):
    """A run copied to another folder keeps its identity; a file without one is a clear error."""
    import shutil

    original = write_metrics(tmp_path, "ds", "sasrec", "none", 0, 0.10, 0.04)
    moved = tmp_path / "elsewhere" / "metrics.json"
    moved.parent.mkdir()
    shutil.copy(original, moved)
    runs = tables.load_runs([str(moved)])
    assert list(runs) == [("ds", "sasrec", "none")] and runs["ds", "sasrec", "none"][0][0] == 0
    old = tmp_path / "old.json"
    old.write_text(json.dumps({"test": {"HR@20": 0.1}}))
    with pytest.raises(UserError, match="rerun the student rule"):
        tables.load_runs([str(old)])
