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
    path.parent.mkdir(parents=True, exist_ok=True)
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
    # per backbone and column: the best **bold**, the runner-up _underlined_
    assert rows[3][2:] == ["0.2000", "_0.0900_"] and rows[4][2:] == ["_0.2500_", "0.0800"]
    assert rows[5][2:] == ["**0.3000**", "**0.1000**"]
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
    assert rows[3] == ["ds", "Gain", "+100.00%", "+100.00%", "1,000× faster"]
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
    # gamma_p is not swept: neither drawn nor listed
    tables.figure2(students=students, dllm2rec={"type": "dllm2rec", "lambda_d": 0.3, "gamma_o": 0.1, "gamma_p": 0.3},
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


def test_speedup_reads_as_times_faster():
    assert tables.speedup(8275.6686, 1.0) == "8,276× faster"  # was "+827466.86%"
    assert tables.speedup(3.0, 2.0) == "1.50× faster" and tables.speedup(2.0, 50.0) == "25.0× slower"


# --- significance ---------------------------------------------------------------------------
def test_paired_t_test_on_students_sleep_data():
    """R: t.test(extra ~ group, data = sleep, paired = TRUE) -> t = -4.0621, df = 9, p-value = 0.002833."""
    g1 = [0.7, -1.6, -0.2, -1.2, -0.1, 3.4, 3.7, 0.8, 0.0, 2.0]
    g2 = [1.9, 0.8, 1.1, 0.1, -0.1, 4.4, 5.5, 1.6, 4.6, 3.4]
    t, df, p = tables.paired_t_test(g1, g2)
    assert t == pytest.approx(-4.0621, abs=1e-4) and df == 9 and p == pytest.approx(0.002833, abs=1e-6)
    assert tables.paired_t_test([1, 2, 3], [1, 2, 3])[2] == 1.0
    assert tables.paired_t_test([2, 3, 4], [1, 2, 3])[2] == 0.0


@pytest.mark.parametrize("t, df", [(0.1, 1), (2.5, 3), (1.96, 100000), (40.0, 399), (3.3, 7999), (0.7, 2.5)])
def test_t_distribution_matches_known_values(t, df):
    # df = 1 is the Cauchy distribution: P(|T| >= t) = 1 - 2 atan(t) / pi
    if df == 1:
        import math
        assert tables.t_two_sided_p(t, df) == pytest.approx(1 - 2 * math.atan(t) / math.pi, rel=1e-12)
    scipy_stats = pytest.importorskip("scipy.stats")
    assert tables.t_two_sided_p(t, df) == pytest.approx(2 * scipy_stats.t.sf(t, df), rel=1e-9)


def write_ranks_file(metrics_path, columns):
    """A run's ranks.parquet beside its metrics.json, with the run's identity as the trainer writes it."""
    import pyarrow as pa

    from dllm2rec.io import write_parquet
    from dllm2rec.student_run import IDENTITY, RANKS_SCHEMA

    metrics = json.loads(open(metrics_path).read())
    path = metrics_path.replace("metrics.json", "ranks.parquet")
    write_parquet(pa.table(columns, schema=RANKS_SCHEMA), path, metadata={"identity": {k: metrics[k] for k in IDENTITY}})
    return path


def write_student_ranks(metrics_path, ranks, topk=None):
    n = len(ranks)
    return write_ranks_file(metrics_path, {"split": ["test"] * n, "seq_id": list(range(n)), "target": [0] * n,
                                           "rank": ranks, "topk": topk or [[0] * 20] * n})


def test_table5_p_value_of_dllm2rec_against_the_best_baseline(tmp_path):
    # per (seed, sequence) HR@20 differences DLLM2Rec - RD: 1,0,1 | 1,0,0 -> paired t = 2.236, df 5, p = 0.07559
    ranks = {("dllm2rec", 0): [1, 5, 2], ("rd", 0): [30, 5, 25], ("dllm2rec", 1): [2, 40, 7], ("rd", 1): [30, 40, 7],
             ("none", 0): [30] * 3, ("none", 1): [30] * 3}
    hr = {"none": 0.0, "rd": 0.33, "dllm2rec": 0.83}
    students, rank_files = [], []
    for backbone in ("sasrec", "dros"):  # two backbones: the same test per backbone
        students += [write_metrics(tmp_path, "ds", backbone, m, s, hr[m], hr[m] / 2) for m, s in ranks]
        rank_files += [write_student_ranks(p, r) for p, r in zip(students[-len(ranks):], ranks.values())]
    teacher = [write_teacher(tmp_path, "ds", 0.12, 0.05)]
    out, seeds = tmp_path / "t5.csv", tmp_path / "t5s.csv"
    tables.table5(teacher=teacher, students=students, ranks=rank_files, methods=["none", "rd", "dllm2rec"],
                  out=str(out), out_seeds=str(seeds))
    gain_b = [r for r in read(out) if r[1] == "Gain.B"]
    assert [r[0] for r in gain_b] == ["SASRec", "DROS"] and all(r[2] == "+151.52% (p=0.076)" for r in gain_b)
    rows = read(seeds)
    p_rows = [r for r in rows if r[3] == "p_value"]
    assert [r[:3] for r in p_rows] == [["ds", "dros", "dllm2rec"], ["ds", "sasrec", "dllm2rec"]]
    p_row = p_rows[1]
    assert float(p_row[rows[0].index("HR@20")]) == pytest.approx(0.07559, abs=1e-4)
    assert p_row[rows[0].index("HR@1")] == ""
    assert "HR@20 vs rd over 6 pairs" in p_row[rows[0].index("p_value_test")]
    assert all(len(r) == len(rows[0]) for r in rows)


# --- Tables 1-3 on a hand-made artifact -------------------------------------------------------
def write_analysis_fixture(root):
    """4 items (items 2 and 3 share a title); 4 test sequences, one DROS seed.

    seq  target  teacher top list   teacher rank   DROS rank   DROS top-20 (first items)
    0    0       [0, 1, ...]        0              3           [1, 2, 0, ...]
    1    1       [2, 3]             none (> 20)    1           [1, ...]
    2    3       [2, 0]             0 (title of 3) 25          [0, 2 ...]
    3    0       [1, 2]             none           30          [3, 1 ...]
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    items = root / "data" / "ds" / "items.parquet"
    items.parent.mkdir(parents=True)
    pq.write_table(pa.table({"item_id": [0, 1, 2, 3], "raw_id": ["a", "b", "c", "d"],
                             "title": ["A", "B", "C", "C"]}), items)
    tranks = root / "teacher" / "ds" / "tch" / "ranks" / "test.parquet"
    tranks.parent.mkdir(parents=True)
    pq.write_table(pa.table({"seq_id": [0, 1, 2, 3], "topk_items": [[0, 1], [2, 3], [2, 0], [1, 2]]}), tranks)
    metrics = write_metrics(root, "ds", "dros", "none", 0, 0.5, 0.3, inference=2.0)
    path = write_ranks_file(metrics, {"split": ["valid"] + ["test"] * 4, "seq_id": [9, 0, 1, 2, 3],
                                      "target": [2, 0, 1, 3, 0], "rank": [1, 3, 1, 25, 30],
                                      "topk": [[2], [1, 2, 0], [1], [0, 2], [3, 1]]})
    teacher = write_teacher(root, "ds", 0.6, 0.45, seconds=5000.0)
    return str(items), str(tranks), metrics, path, teacher


def test_table1_teacher_against_the_plain_dros(tmp_path):
    _, _, metrics, _, teacher = write_analysis_fixture(tmp_path)
    tables.table1(teacher=[teacher], students=[metrics], out=str(tmp_path / "t1.csv"))
    assert read(tmp_path / "t1.csv") == [
        ["dataset", "model", "HR@20", "NDCG@20", "inference_seconds"],
        ["ds", "DROS", "0.5000", "0.3000", "2"],
        ["ds", "BIGRec", "0.6000", "0.4500", "5000"],
        ["ds", "Gain", "+20.00%", "+50.00%", "2,500× slower"],
    ]


def test_table2_who_ranks_the_target_better(tmp_path):
    items, tranks, _, sranks, teacher = write_analysis_fixture(tmp_path)
    tables.table2(teacher=[teacher], teacher_ranks=[tranks], student_ranks=[sranks], items=[items], out=str(tmp_path / "t2.csv"))
    # seq 0: teacher 0 < DROS 2 (better); seq 1: teacher beyond, DROS 0 (worse);
    # seq 2: teacher 0 (title-equivalent item 2), DROS beyond 20 (better); seq 3: both beyond (tie)
    assert read(tmp_path / "t2.csv") == [
        ["dataset", "condition", "relative_ratio", "sequences"],
        ["ds", "BIGRec > DROS", "66.67%", "2"],
        ["ds", "BIGRec < DROS", "33.33%", "1"],
        ["ds", "tie (not counted)", "", "1"],
    ]


def test_table3_overlap_of_the_top_lists_and_their_hits(tmp_path):
    items, tranks, _, sranks, teacher = write_analysis_fixture(tmp_path)
    tables.table3(teacher=[teacher], teacher_ranks=[tranks], student_ranks=[sranks], items=[items], out=str(tmp_path / "t3.csv"))
    # teacher lists {0,1} {2,3} {2,0} {1,2} (8 items); DROS {0,1,2} {1} {0,2} {1,3} (8 items)
    # overlap {0,1} {} {0,2} {1} = 5 items, hits: seq 0 (target 0) -> 1
    # teacher only {} {2,3} {} {2} = 3 items, no hit (seq 2's target 3 is not in its list by id)
    # DROS only {2} {1} {} {3} = 3 items, hit: seq 1 (target 1) -> 1
    assert read(tmp_path / "t3.csv") == [
        ["dataset", "rec_space", "items_ratio", "hit_items"],
        ["ds", "BIGRec only", "37.50%", "0.00%"],
        ["ds", "DROS only", "37.50%", "33.33%"],
        ["ds", "Overlapped", "62.50%", "20.00%"],
    ]


def test_report_figures_and_teacher_table(tmp_path):
    students = [write_metrics(tmp_path, "ds", b, m, 0, 0.3, 0.1) for b in ("sasrec", "dros") for m in ("none", "dllm2rec")]
    for p in students:
        with open(p.replace("metrics.json", "train_log.csv"), "w") as f:
            f.write("epoch,loss,rec_loss,distill_loss,valid_HR@20,valid_NDCG@20,seconds,valid_seconds\n"
                    "1,1.0,1.0,0.0,0.1,0.05,1,1\n2,0.9,0.9,0.0,0.2,0.07,1,1\n")
    teacher = [write_teacher(tmp_path, "ds", 0.12, 0.05)]
    tables.training_curves(students=students, out=str(tmp_path / "c.png"))
    tables.table5_bars(teacher=teacher, students=students, out=str(tmp_path / "b.png"))
    adapter = tmp_path / "teacher" / "ds" / "tch" / "adapter"
    adapter.mkdir()
    (adapter / "teacher_sft.json").write_text(json.dumps({"curve": [
        {"epoch": 0, "train_loss": None, "eval_loss": 3.0}, {"epoch": 1, "train_loss": 2.5, "eval_loss": 2.0}]}))
    tables.sft_curve(teacher=teacher, adapters=[str(adapter)], out=str(tmp_path / "s.png"))
    for name in ("c.png", "b.png", "s.png"):
        assert (tmp_path / name).read_bytes()[:4] == b"\x89PNG"
    tables.teacher_table(teacher=teacher, out=str(tmp_path / "t.csv"))
    assert read(tmp_path / "t.csv") == [["dataset", "HR@20", "NDCG@20", "n_test", "inference_seconds"],
                                        ["ds", "0.1200", "0.0500", "10", "100"]]


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
