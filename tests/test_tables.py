"""Tables assembled from hand-written metrics files: layout, means over seeds, gains."""
import csv
import json
import statistics

import pytest

from dllm2rec import tables
from dllm2rec.sweeps import sweep_params
from dllm2rec.io import UserError


def write_metrics(root, dataset, backbone, method, seed, hr, ndcg, inference=0.5, params=None):
    path = root / "students" / dataset / "tch" / backbone / method / f"seed{seed}" / "metrics.json"
    path.parent.mkdir(parents=True)
    test = {f"{m}@{k}": 0.0 for m in ("HR", "NDCG") for k in (1, 5, 10, 20)}
    test.update({"HR@20": hr, "NDCG@20": ndcg})
    path.write_text(json.dumps({"dataset": dataset, "teacher": "tch", "backbone": backbone, "method": method,
                                "params": params or {}, "seed": seed, "valid": test, "test": test, "best_epoch": 3,
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


def records(path):
    return {(r["backbone"], r["method"], r["metric"]): r for r in tables.read_records(str(path))}


def test_table5_means_over_seeds_and_gains(tmp_path):
    students = [
        write_metrics(tmp_path, "ds", "sasrec", "none", 0, 0.10, 0.04),
        write_metrics(tmp_path, "ds", "sasrec", "none", 1, 0.20, 0.06),
        write_metrics(tmp_path, "ds", "sasrec", "dllm2rec", 0, 0.30, 0.10),
        write_metrics(tmp_path, "ds", "sasrec", "rd", 0, 0.25, 0.08),
        write_metrics(tmp_path, "ds", "sasrec", "hint", 0, 0.20, 0.09),
    ]
    teacher = [write_teacher(tmp_path, "ds", 0.12, 0.05)]
    out, seeds, md, html = tmp_path / "t5.csv", tmp_path / "t5s.csv", tmp_path / "t5.md", tmp_path / "t5.html"
    tables.table5(teacher=teacher, students=students, methods=["none", "hint", "rd", "dllm2rec"], out=str(out),
                  out_seeds=str(seeds), out_md=str(md), html=str(html))
    assert read(out)[0] == tables.TABLE5_COLUMNS
    r = records(out)
    assert [k for k in r if k[2] == "HR@20"] == [("", "teacher", "HR@20"), *(("sasrec", m, "HR@20") for m in ("none", "hint", "rd", "dllm2rec"))]
    assert r["", "teacher", "HR@20"]["mean"] == 0.12 and r["", "teacher", "HR@20"]["n"] == 10
    none = r["sasrec", "none", "HR@20"]
    assert none["mean"] == pytest.approx(0.15) and none["std"] == pytest.approx(0.0707, abs=1e-4) and none["seeds"] == 2
    assert r["sasrec", "rd", "HR@20"]["std"] != r["sasrec", "rd", "HR@20"]["std"]  # one seed: blank, not 0
    # the ranks per column (1 = best): HR 0.30 > 0.25 > 0.20 > 0.15; NDCG 0.10 > 0.09 > 0.08 > 0.05
    assert [r["sasrec", m, "HR@20"]["rank"] for m in ("none", "hint", "rd", "dllm2rec")] == [4, 3, 2, 1]
    assert [r["sasrec", m, "NDCG@20"]["rank"] for m in ("none", "hint", "rd", "dllm2rec")] == [4, 2, 3, 1]
    d = r["sasrec", "dllm2rec", "HR@20"]
    assert d["gain_s"] == pytest.approx(1.0) and d["gain_b"] == pytest.approx(0.2) and d["baseline"] == "rd"
    assert r["sasrec", "dllm2rec", "NDCG@20"]["baseline"] == "hint"
    assert r["sasrec", "dllm2rec", "NDCG@20"]["gain_b"] == pytest.approx(0.1111, abs=1e-4)
    # no per-sequence ranks: the interval from the mean (the bound sqrt(m(1-m)/(n-1)), n = the teacher's 10)
    assert d["se_from"] == "bound" and d["se"] == pytest.approx((0.3 * 0.7 / 9) ** 0.5, rel=1e-5)
    assert d["ci_high"] == pytest.approx(0.3 + 2.262157 * d["se"], abs=1e-5) and d["ci_low"] == 0.0  # t(0.975, 9); clipped at 0
    # the paper's layout: best bold, runner-up underlined; marks apart by more than one hit (1/10)? no:
    # HR 0.30 vs 0.25 is half a hit, so that column has no mark
    text = md.read_text()
    assert "| SASRec | +DLLM2Rec | 0.3000 [" in text and "| SASRec | Gain.S | +100.00%" in text
    page = html.read_text()
    assert "<b>" not in page and "+20.00%" in page and "0.2500" in page
    seed_rows = read(seeds)
    assert seed_rows[0][:4] == ["dataset", "backbone", "method", "seed"] and {r[3] for r in seed_rows[1:]} == {"0", "1"}


def test_table5_csv_reads_as_floats_in_pandas(tmp_path):
    pd = pytest.importorskip("pandas")
    students = [write_metrics(tmp_path, "ds", "sasrec", m, 0, hr, hr / 2) for m, hr in (("none", 0.1), ("dllm2rec", 0.3))]
    out = tmp_path / "t5.csv"
    tables.table5(teacher=[write_teacher(tmp_path, "ds", 0.12, 0.05)], students=students, out=str(out),
                  out_seeds=str(tmp_path / "s.csv"))
    df = pd.read_csv(out)
    for column in ("mean", "std", "seeds", "n", "se", "ci_low", "ci_high", "rank", "gain_s", "p_s", "gain_b", "p_b"):
        assert df[column].dtype.kind == "f" or df[column].dtype.kind == "i", column
    assert df.loc[(df.method == "dllm2rec") & (df.metric == "HR@20"), "gain_s"].item() == pytest.approx(2.0)
    seeds = pd.read_csv(tmp_path / "s.csv")
    assert all(seeds[c].dtype.kind == "f" for c in ("HR@20", "NDCG@20", "inference_seconds"))


def test_equal_means_share_a_rank_despite_rounding(tmp_path):
    # (0.1 + 0.2) / 2 and (0.05 + 0.25) / 2 are 0.15 in decimals, not in binary
    students = [write_metrics(tmp_path, "ds", "sasrec", m, s, hr, 0.1) for m, s, hr in
                (("rd", 0, 0.1), ("rd", 1, 0.2), ("cd", 0, 0.05), ("cd", 1, 0.25), ("none", 0, 0.01), ("none", 1, 0.01))]
    out = tmp_path / "t5.csv"
    tables.table5(teacher=[write_teacher(tmp_path, "ds", 0.12, 0.05)], students=students, out=str(out),
                  out_seeds=str(tmp_path / "s.csv"), methods=["none", "rd", "cd"])
    r = records(out)
    assert r["sasrec", "rd", "HR@20"]["rank"] == r["sasrec", "cd", "HR@20"]["rank"] == 1
    assert r["sasrec", "none", "HR@20"]["rank"] == 2


def test_table5_marks_only_where_the_top_two_are_more_than_one_hit_apart(tmp_path):
    students = [write_metrics(tmp_path, "ds", "sasrec", m, 0, hr, nd) for m, hr, nd in
                (("none", 0.1, 0.01), ("rd", 0.2, 0.05), ("dllm2rec", 0.4, 0.06))]
    html = tmp_path / "t5.html"
    tables.table5(teacher=[write_teacher(tmp_path, "ds", 0.12, 0.05)], students=students, out=str(tmp_path / "t5.csv"),
                  out_seeds=str(tmp_path / "s.csv"), html=str(html))
    page = html.read_text()
    # n = 10: HR 0.4 vs 0.2 is two hits apart (marked); NDCG 0.06 vs 0.05 is within one (no mark)
    assert "<b>0.4000</b>" in page and "<u>0.2000</u>" in page
    assert "<b>0.0600</b>" not in page and "<u>0.0500</u>" not in page


def test_every_dllm2rec_method_is_a_row_with_its_own_gains(tmp_path):
    """A second DLLM2Rec variant (a method of type dllm2rec) gets its own Gain.S, Gain.B and p."""
    students = [write_metrics(tmp_path, "ds", "sasrec", m, 0, hr, hr / 2)
                for m, hr in (("none", 0.1), ("rd", 0.2), ("dllm2rec", 0.3), ("official", 0.4))]
    path = students[-1]
    metrics = json.loads(open(path).read())
    metrics["params"] = {"method": {"type": "dllm2rec"}}
    open(path, "w").write(json.dumps(metrics))
    out, md = tmp_path / "t5.csv", tmp_path / "t5.md"
    tables.table5(teacher=[write_teacher(tmp_path, "ds", 0.12, 0.05)], students=students, out=str(out),
                  out_seeds=str(tmp_path / "s.csv"), out_md=str(md), methods=["none", "rd", "dllm2rec", "official"])
    r = records(out)
    assert r["sasrec", "official", "HR@20"]["gain_s"] == pytest.approx(3.0)
    assert r["sasrec", "official", "HR@20"]["gain_b"] == pytest.approx(1.0) and r["sasrec", "official", "HR@20"]["baseline"] == "rd"
    assert r["sasrec", "dllm2rec", "HR@20"]["baseline"] == "rd"  # one DLLM2Rec row is not the other's baseline
    labels = [line.split(" | ")[1] for line in md.read_text().splitlines() if line.startswith("| SASRec")]
    assert labels == ["+None", "+RD", "+DLLM2Rec", "Gain.S +DLLM2Rec", "Gain.B +DLLM2Rec", "official",
                      "Gain.S official", "Gain.B official"]


def test_table6_and_ablation(tmp_path):
    students = [
        write_metrics(tmp_path, "ds", "dros", "dllm2rec", 0, 0.30, 0.10, inference=2.0),
        write_metrics(tmp_path, "ds", "dros", "dllm2rec-wo-wc", 0, 0.20, 0.08),
    ]
    teacher = [write_teacher(tmp_path, "ds", 0.15, 0.05, seconds=2000.0)]
    tables.table6(teacher=teacher, students=students[:1], out=str(tmp_path / "t6.csv"), html=str(tmp_path / "t6.html"))
    rows = read(tmp_path / "t6.csv")
    assert rows[1:] == [["ds", "BIGRec", "0.15", "0.05", "2000"], ["ds", "DLLM2Rec (DROS)", "0.3", "0.1", "2"]]
    page = (tmp_path / "t6.html").read_text()  # the gain row is the page's, computed from the data
    assert "<td>Gain</td>" in page and "+100.00%" in page and "1,000× faster" in page
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
    assert read(tmp_path / "t4.csv")[1] == ["ds", "3", "4", "6", "0.5", "8", "1", "1"]


def test_figure2_points_and_png(tmp_path):
    students = [
        write_metrics(tmp_path, "ds", "dros", "dllm2rec", 0, 0.30, 0.10),
        # the points' values are read from their params (sweeps.sweep_params), not from their names
        write_metrics(tmp_path, "ds", "dros", "low", 0, 0.20, 0.05, params={"sweep": sweep_params("lambda_d", 0.1)}),
        write_metrics(tmp_path, "ds", "dros", "high", 0, 0.25, 0.07, params={"sweep": sweep_params("lambda_d", 1)}),
        write_metrics(tmp_path, "ds", "dros", "dllm2rec-gamma_o-0.7", 0, 0.10, 0.02,
                      params={"sweep": sweep_params("gamma_o", 0.5)}),
    ]
    png, table = tmp_path / "f2.png", tmp_path / "f2.csv"
    # gamma_p is not swept: neither drawn nor listed
    tables.figure2(students=students, dllm2rec={"type": "dllm2rec", "lambda_d": 0.3, "gamma_o": 0.1, "gamma_p": 0.3},
                   out=str(png), out_table=str(table))
    rows = read(table)
    assert rows[0] == ["param", "value", "dataset", "HR@20", "NDCG@20"]
    assert rows[1:] == [
        ["gamma_o", "0.1", "ds", "0.3", "0.1"],  # the plain run at its configured value
        ["gamma_o", "0.5", "ds", "0.1", "0.02"],
        ["lambda_d", "0.1", "ds", "0.2", "0.05"],
        ["lambda_d", "0.3", "ds", "0.3", "0.1"],
        ["lambda_d", "1", "ds", "0.25", "0.07"],
    ]
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_speedup_reads_as_times_faster():
    from dllm2rec import render

    assert render.speedup(8275.6686, 1.0) == "8,276× faster"  # was "+827466.86%"
    assert render.speedup(3.0, 2.0) == "1.50× faster" and render.speedup(2.0, 50.0) == "25.0× slower"


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
    r = records(out)
    for backbone in ("sasrec", "dros"):
        d = r[backbone, "dllm2rec", "HR@20"]
        assert d["gain_b"] == pytest.approx(1.5152, abs=1e-4) and d["baseline"] == "rd"
        assert d["p_b"] == pytest.approx(0.07559, abs=1e-4)
        # the interval from the per-sequence ranks: per sequence HR averaged over the seeds = 1, 0.5, 1
        assert d["se_from"] == "sequences" and d["n"] == 3
        assert d["se"] == pytest.approx(statistics.stdev([1.0, 0.5, 1.0]) / 3 ** 0.5, rel=1e-6)


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
    tables.table1(teacher=[teacher], students=[metrics], out=str(tmp_path / "t1.csv"), html=str(tmp_path / "t1.html"))
    assert read(tmp_path / "t1.csv") == [
        ["dataset", "model", "HR@20", "NDCG@20", "inference_seconds"],
        ["ds", "DROS", "0.5", "0.3", "2"],
        ["ds", "BIGRec", "0.6", "0.45", "5000"],
    ]
    page = (tmp_path / "t1.html").read_text()
    assert "+20.00%" in page and "+50.00%" in page and "2,500× slower" in page


def test_table2_who_ranks_the_target_better(tmp_path):
    items, tranks, _, sranks, teacher = write_analysis_fixture(tmp_path)
    tables.table2(teacher=[teacher], teacher_ranks=[tranks], student_ranks=[sranks], items=[items], out=str(tmp_path / "t2.csv"))
    # seq 0: teacher 0 < DROS 2 (better); seq 1: teacher beyond, DROS 0 (worse);
    # seq 2: teacher 0 (title-equivalent item 2), DROS beyond 20 (better); seq 3: both beyond (tie)
    assert read(tmp_path / "t2.csv") == [
        ["dataset", "condition", "relative_ratio", "sequences"],
        ["ds", "BIGRec > DROS", "0.66666667", "2"],
        ["ds", "BIGRec < DROS", "0.33333333", "1"],
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
        ["dataset", "rec_space", "items_ratio", "hit_items", "items", "list_items", "hits"],
        ["ds", "BIGRec only", "0.375", "0", "3", "8", "0"],
        ["ds", "DROS only", "0.375", "0.33333333", "3", "8", "1"],
        ["ds", "Overlapped", "0.625", "0.2", "5", "8", "1"],
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
                                        ["ds", "0.12", "0.05", "10", "100"]]


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


def test_t_quantile_inverts_the_tail():
    assert tables.t_quantile(0.975, 9) == pytest.approx(2.262157, abs=1e-6)  # R: qt(0.975, 9)
    assert tables.t_quantile(0.975, 199) == pytest.approx(1.971957, abs=1e-6)  # R: qt(0.975, 199)


def test_each_method_has_one_colour_in_every_figure():
    colours = [tables.method_colour(m) for m in tables.method_names()]
    assert len(set(colours)) == len(colours)
    assert tables.method_colour("dllm2rec") == colours[list(tables.method_names()).index("dllm2rec")]
    assert tables.method_colour("variant-x") == tables.method_colour("variant-x") not in colours
