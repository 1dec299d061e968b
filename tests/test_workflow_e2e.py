"""The whole workflow end to end on a tiny config: a tiny random LLaMA teacher, a few hundred
sequences, every backbone and every method, then what a rerun and a config change schedule."""
import csv
import json
import random

import pytest

from dllm2rec.distill.spec import option_types, options_class
from dllm2rec.selection import grid_points, read_choice
from tiny_llm import make_tiny_llama
from workflow_utils import ROOT, copy_project, load_yaml, snakemake, write_config

pytestmark = pytest.mark.slow

N_ITEMS = 40
METHODS = ["none", "hint", "htd", "rd", "cd", "rrd", "dcd", "unkd", "kar", "llmcf", "dllm2rec"]


def grid_runs(method):
    """The run names of a method's grid points in config.yaml (every Table 5 row has a grid)."""
    entry = load_yaml(ROOT / "config.yaml")["methods"][method]
    return [p.name for p in grid_points(method, entry["search"], option_types(options_class(entry["type"])))]


def write_tiny_dataset(raw):
    """SASRec text format with titles: 120 users walking a ring of 40 items (item i -> i+1, with noise)."""
    rng = random.Random(0)
    raw.mkdir(parents=True)
    lines = []
    for user in range(120):
        item = rng.randrange(N_ITEMS)
        for _ in range(rng.randint(6, 14)):
            lines.append(f"u{user} {item}")
            item = (item + 1) % N_ITEMS if rng.random() < 0.8 else rng.randrange(N_ITEMS)
    (raw / "interactions.txt").write_text("\n".join(lines) + "\n")
    (raw / "titles.txt").write_text("".join(f"{i}::Movie number {i} ({1950 + i})\n" for i in range(N_ITEMS)))


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    project = copy_project(tmp_path_factory.mktemp("project"))
    write_tiny_dataset(project / "raw")
    model = make_tiny_llama(project / "raw" / "tiny-llama")
    config = {
        "datasets": {"tiny": {"source": "sasrec", "sample_rule": "amazon", "noun": "movie",
                              "paths": {"file": "raw/interactions.txt", "titles": "raw/titles.txt"}}},
        "teachers": {"tiny-llama": {
            "base_model": model,
            "sft": {"train_samples": 32, "valid_samples": 8, "batch_size": 16, "micro_batch_size": 8,
                    "epochs": 1, "warmup_steps": 0, "cutoff_len": 256},
            "generation": {"num_beams": 2, "max_new_tokens": 8, "batch_size": 32},
            "grounding": {"topn": 30, "batch_size": 64},
        }},
        "teacher_shards": 2,
        "student": {"epochs": 3, "patience": 2, "batch_size": 64},
        "tables": {"teacher": "tiny-llama", "datasets": ["tiny"], "backbones": ["gru4rec", "sasrec", "dros"],
                   "methods": METHODS, "seeds": [0], "figure2": {"backbone": "dros", "lambda_d": [0.9]}},
    }
    write_config(project / "tiny.yaml", config)
    # the default targets: every table, figure and what the report shows
    res = snakemake(project, "--cores", "2", "--configfile", "tiny.yaml")
    assert res.returncode == 0, res.stdout[-5000:]
    return project


def test_report_builds_without_mailto_links(tiny_run):
    res = snakemake(tiny_run, "--report", "report.html", "--configfile", "tiny.yaml")
    assert res.returncode == 0, res.stdout[-3000:]
    html = (tiny_run / "report.html").read_text()
    assert "mailto:HR" not in html and "mailto:NDCG" not in html  # captions escape HR\@20 (docutils links x@y)
    for name in ("table1.html", "table2.html", "table3.html", "table5.html", "teacher_metrics.html", "valid_ndcg.png",
                 "sft_loss.png", "table5_bars.png", "figure2.png", "selection.html", "table5.csv"):
        assert name in html, name
    assert "Data: ['tiny']" not in html and "Data: tiny" in html  # the front page names the datasets
    # the report embeds each table's page (shown inline); Table 5's holds the numbers of table5.csv
    # (scripts/report_browser_check.py checks the same on screen in headless Chromium)
    import base64
    import re

    from dllm2rec.tables import read_records

    pages = [base64.b64decode(b).decode() for b in re.findall(r"data:text/html[^\"']*?base64,([A-Za-z0-9+/=]+)", html)]
    table5 = [p for p in pages if "<h3>Table 5: test HR@20 and NDCG@20</h3>" in p]
    assert len(table5) == 1
    means = {f"{r['mean']:.4f}" for r in read_records(str(tiny_run / "results" / "table5.csv"))}
    assert all(m in table5[0] for m in means)


def read_csv(path):
    with open(path) as f:
        return list(csv.reader(f))


def test_table5_has_every_row_with_metrics_in_unit_interval(tiny_run):
    from dllm2rec.tables import TABLE5_COLUMNS, read_records

    assert read_csv(tiny_run / "results" / "table5.csv")[0] == TABLE5_COLUMNS
    records = read_records(str(tiny_run / "results" / "table5.csv"))
    rows = list(dict.fromkeys((r["backbone"], r["method"]) for r in records))
    assert rows[:3] == [("", "teacher"), ("", "popularity"), ("", "chance")]  # the reference rows (popularity.json)
    for backbone in ("gru4rec", "sasrec", "dros"):
        assert [m for b, m in rows if b == backbone] == METHODS
    for r in records:
        assert 0.0 <= r["mean"] <= 1.0 and r["n"] > 0, r
        if r["method"] != "chance":
            assert r["ci_low"] <= r["mean"] <= r["ci_high"], r
        if r["backbone"]:
            assert r["se_from"] == "sequences" and r["rank"] >= 1, r
        if r["method"] == "dllm2rec":
            assert r["baseline"] in METHODS and 0.0 <= r["p_b"] <= 1.0, r
    # the renderings: table5.md and the report's page hold the same numbers
    dllm = next(r for r in records if r["backbone"] == "dros" and r["method"] == "dllm2rec" and r["metric"] == "HR@20")
    for page in ("table5.md", "report/table5.html"):
        assert f"{dllm['mean']:.4f}" in (tiny_run / "results" / page).read_text(), page
    # Tables 1-3 and the per-sequence ranks they read
    assert [r[1] for r in read_csv(tiny_run / "results" / "table1.csv")[1:]] == ["DROS", "BIGRec"]  # Gain: the page's
    assert "<td>Gain</td>" in (tiny_run / "results" / "report" / "table1.html").read_text()
    t2 = read_csv(tiny_run / "results" / "table2.csv")
    assert [r[1] for r in t2[1:]] == ["BIGRec > DROS", "BIGRec < DROS", "tie (not counted)"]
    assert float(t2[1][2]) + float(t2[2][2]) == pytest.approx(1.0)
    assert sum(int(r[3]) for r in t2[1:]) == json.loads(
        (tiny_run / "results" / "teacher" / "tiny" / "tiny-llama" / "metrics.json").read_text())["n_test"]
    t3 = read_csv(tiny_run / "results" / "table3.csv")
    assert float(t3[1][2]) + float(t3[3][2]) == pytest.approx(1.0)
    # the artifact contract of one student run (DLLM2Rec's: the grid point chosen on validation)
    choice = read_choice(tiny_run / "results" / "selection.csv")
    run = tiny_run / "results" / "students" / "tiny" / "tiny-llama" / "sasrec" / choice["tiny", "sasrec", "dllm2rec"] / "seed0"
    metrics = json.loads((run / "metrics.json").read_text())
    assert set(metrics["test"]) == {f"{m}@{k}" for m in ("HR", "NDCG") for k in (1, 5, 10, 20)}
    assert (run / "model.pt").stat().st_size > 0 and len(read_csv(run / "train_log.csv")) >= 2
    # Figure 2's sweep: DLLM2Rec at its chosen lambda_d (config.yaml's grid: 0.3 or 0.7) and the extra run at 0.9
    chosen = choice["tiny", "dros", "dllm2rec"].split("=")[1]
    assert chosen in ("0.3", "0.7")
    points = read_csv(tiny_run / "results" / "figure2.csv")
    assert [r[:3] for r in points[1:] if r[0] == "lambda_d"] == [["lambda_d", chosen, "tiny"], ["lambda_d", "0.9", "tiny"]]
    assert (tiny_run / "results" / "figure2.png").read_bytes()[:4] == b"\x89PNG"


def test_teacher_artifacts_follow_the_contract(tiny_run):
    import pyarrow.parquet as pq

    tdir = tiny_run / "results" / "teacher" / "tiny" / "tiny-llama"
    seqs = pq.read_table(tiny_run / "results" / "data" / "tiny" / "sequences.parquet").to_pandas()
    # the train split (the methods) and the test split (the teacher's metrics); no method reads valid
    assert not (tdir / "ranks" / "valid.parquet").exists()
    for split in ("train", "test"):
        ranks = pq.read_table(tdir / "ranks" / f"{split}.parquet")
        assert ranks.column_names[:5] == ["seq_id", "generated", "topk_items", "topk_dist", "target_dist"]
        assert sorted(ranks["seq_id"].to_pylist()) == sorted(seqs[seqs.split == split].seq_id.tolist())
        assert len(ranks["topk_items"][0]) == 30
    teacher = json.loads((tdir / "metrics.json").read_text())
    assert 0 <= teacher["test"]["HR@20"] <= 1 and teacher["inference_seconds"] > 0
    # KAR's knowledge: a user's prompt names none of their valid / test targets (their training
    # interactions aside), and the vectors cover every item and every sequence
    users = pq.read_table(tdir / "knowledge" / "users.parquet").to_pylist()
    titles = pq.read_table(tiny_run / "results" / "data" / "tiny" / "items.parquet").column("title").to_pylist()
    assert users and len(pq.read_table(tdir / "knowledge" / "item_embeddings.parquet")) == N_ITEMS
    for u in users:
        rows = seqs[seqs.user == u["user"]]
        train = {i for h in rows[rows.split == "train"].history for i in h} | set(rows[rows.split == "train"].target)
        for item in set(rows[rows.split != "train"].target) - train:
            assert f'"{titles[item]}"' not in u["prompt"], (u["user"], titles[item])
    for split in ("train", "valid", "test"):
        emb = pq.read_table(tdir / "knowledge" / "user_embeddings" / f"{split}.parquet")
        assert sorted(emb["seq_id"].to_pylist()) == sorted(seqs[seqs.split == split].seq_id.tolist())


def dry_run_jobs(project, *extra):
    """(stdout, [(rule, first output)]) of a dry run. A student job (rule `student`, or one
    `student_<backbone>_<method>_<hash>` rule per fused group, docs/students.md) is listed once
    per run it trains, as rule `student` with that run's metrics.json."""
    res = snakemake(project, "results/table5.csv", "-n", "--cores", "2", "--configfile", *extra)
    assert res.returncode == 0, res.stdout[-3000:]
    jobs, rule = [], None
    for line in res.stdout.splitlines():
        line = line.strip()
        if line.startswith(("rule ", "checkpoint ")) and line.endswith(":"):
            rule = line.split(" ", 1)[1][:-1]
        elif line.startswith("output:") and rule is not None:
            outputs = [o.strip() for o in line[len("output:"):].split(", ")]
            if rule.startswith("student"):
                jobs += [["student", o] for o in outputs if o.endswith("metrics.json")]
            else:
                jobs.append([rule, outputs[0]])
            rule = None
    return res.stdout, jobs


def test_second_invocation_does_nothing(tiny_run):
    out, jobs = dry_run_jobs(tiny_run, "tiny.yaml")
    assert jobs == [] and "Nothing to be done" in out


def overlay(project, name, edit):
    cfg = load_yaml(project / "tiny.yaml")
    edit(cfg)
    write_config(project / name, cfg)
    return name


def test_student_hyperparameter_change_reruns_only_its_jobs(tiny_run):
    name = overlay(tiny_run, "alpha.yaml", lambda c: c["student"].update(backbones={"gru4rec": {}, "sasrec": {}, "dros": {"alpha": 0.7}}))
    _, jobs = dry_run_jobs(tiny_run, name)
    rules = [r for r, _ in jobs]
    assert set(rules) == {"student", "selection", "table5"}
    students = [o for r, o in jobs if r == "student"]
    assert len(students) == 2 * len(METHODS) and all("/dros/" in o for o in students)  # every row: 2 grid points

    # an option outside the grid: every point of the method reruns, nothing else
    name = overlay(tiny_run, "ed.yaml", lambda c: c.setdefault("methods", {}).update(dllm2rec={"type": "dllm2rec", "ed_weight": 0.5}))
    _, jobs = dry_run_jobs(tiny_run, name)
    students = [o for r, o in jobs if r == "student"]
    assert {r for r, _ in jobs} == {"student", "selection", "table5"} and len(students) == 6
    assert all("/dllm2rec@lambda_d=" in o for o in students)


def test_grid_value_change_reruns_only_its_group_the_selection_and_the_tables(tiny_run):
    cfg = load_yaml(tiny_run / "config.yaml")
    assert cfg["methods"]["dllm2rec"]["search"] == {"lambda_d": [0.3, 0.7]}
    name = overlay(tiny_run, "grid.yaml", lambda c: c.setdefault("methods", {}).update(
        dllm2rec={"type": "dllm2rec", "search": {"lambda_d": [0.3, 0.9]}}))
    _, jobs = dry_run_jobs(tiny_run, name)
    assert {r for r, _ in jobs} == {"student", "selection", "table5"}
    # the points of one backbone train as one fused group: the group with the new value reruns
    assert sorted(o for r, o in jobs if r == "student") == sorted(
        f"results/students/tiny/tiny-llama/{b}/dllm2rec@lambda_d={v}/seed0/metrics.json"
        for b in ("gru4rec", "sasrec", "dros") for v in ("0.3", "0.9"))


def test_teacher_change_reruns_teacher_and_downstream_never_data(tiny_run):
    name = overlay(tiny_run, "lr.yaml", lambda c: c["teachers"]["tiny-llama"]["sft"].update(lr=2.0e-4))
    _, jobs = dry_run_jobs(tiny_run, name)
    rules = {r for r, _ in jobs}
    assert {"sft", "teacher_shard", "teacher_gather", "teacher_metrics", "student", "table5"} <= rules
    assert "dataset" not in rules and "base_model" not in rules and "item_embeddings" not in rules
    assert "knowledge" not in rules and "knowledge_embeddings" not in rules
    students = [o for r, o in jobs if r == "student"]
    # `none` reads no teacher output; Hint and HTD only the item embeddings, made by the base model
    # (KAR's knowledge comes from the base model, not the fine-tuned one)
    on_sft = [p for m in METHODS if m not in ("none", "hint", "htd", "kar") for p in grid_runs(m)]
    assert sorted(students) == sorted(
        f"results/students/tiny/tiny-llama/{b}/{m}/seed0/metrics.json" for b in ("gru4rec", "sasrec", "dros") for m in on_sft)


def test_package_code_change_reruns_the_rules_that_run_it(tiny_run):
    source = tiny_run / "dllm2rec" / "student" / "sasrec.py"
    original = source.read_text()
    try:
        source.write_text(original + "\n# changed\n")
        _, jobs = dry_run_jobs(tiny_run, "tiny.yaml")
        rules = {r for r, _ in jobs}
        assert rules == {"student", "selection", "table5"}
        assert len([1 for r, _ in jobs if r == "student"]) == 3 * 2 * len(METHODS)
    finally:
        source.write_text(original)


RECOMMENDER_METHODS = ["none", "hint", "rd", "dllm2rec"]


@pytest.fixture(scope="module")
def recommender_run(tmp_path_factory):
    """The tiny dataset with its training split capped at 60 sequences, distilled from a SASRec
    teacher trained on the whole training split (`type: recommender`); no LLM anywhere."""
    project = copy_project(tmp_path_factory.mktemp("project"))
    write_tiny_dataset(project / "raw")
    config = {
        "datasets": {"tiny": {"source": "sasrec", "sample_rule": "amazon", "noun": "movie",
                              "paths": {"file": "raw/interactions.txt", "titles": "raw/titles.txt"},
                              "sample": {"train": 60, "seed": 0}}},
        "teachers": {"sasrec-whole": {"type": "recommender", "recommender": {"backbone": "sasrec",
                                                                            "student": {"epochs": 4}},
                                      "grounding": {"topn": 30}}},
        "student": {"epochs": 3, "patience": 2, "batch_size": 64},
        "tables": {"teacher": "sasrec-whole", "datasets": ["tiny"], "backbones": ["sasrec", "dros"],
                   "methods": RECOMMENDER_METHODS, "seeds": [0]},
    }
    write_config(project / "rec.yaml", config)
    res = snakemake(project, "--cores", "2", "--configfile", "rec.yaml")
    assert res.returncode == 0, res.stdout[-5000:]
    return project


def test_a_recommender_teacher_runs_end_to_end(recommender_run):
    import pyarrow.parquet as pq

    from dllm2rec.tables import read_records

    results = recommender_run / "results"
    records = read_records(str(results / "table5.csv"))
    teacher = [r for r in records if r["method"] == "teacher"]
    assert {r["model"] for r in teacher} == {"SASRec (whole training split)"}
    assert all(0.0 <= r["mean"] <= 1.0 for r in teacher)
    sasrec = [r for r in records if r["backbone"] == "sasrec" and r["metric"] == "HR@20"]
    assert [r["model"] for r in sasrec] == ["+None", "+Hint", "+RD", "+DLLM2Rec"]
    assert sasrec[-1]["gain_s"] == sasrec[-1]["gain_s"] and sasrec[-1]["baseline"] in ("hint", "rd")  # Gain.S, Gain.B
    assert [r[1] for r in read_csv(results / "table1.csv")[1:]] == ["DROS", "SASRec (whole training split)"]
    # the teacher trained on every training sequence; its ranks cover the students' capped split
    tdir = results / "teacher" / "tiny" / "sasrec-whole"
    whole = pq.read_table(tdir / "train_data" / "sequences.parquet").to_pandas()
    seqs = pq.read_table(results / "data" / "tiny" / "sequences.parquet").to_pandas()
    assert (seqs.split == "train").sum() == 60 < (whole.split == "train").sum()
    for split in ("train", "valid", "test"):
        ranks = pq.read_table(tdir / "ranks" / f"{split}.parquet")
        assert sorted(ranks["seq_id"].to_pylist()) == sorted(seqs[seqs.split == split].seq_id.tolist())
        assert len(ranks["topk_items"][0]) == 30
    run = json.loads((tdir / "recommender" / "metrics.json").read_text())
    assert run["epochs_run"] <= 4 and run["method"] == "none"
    assert json.loads((tdir / "metrics.json").read_text())["kind"] == "SASRec (whole training split)"
    out, jobs = dry_run_jobs(recommender_run, "rec.yaml")
    assert jobs == [] and "Nothing to be done" in out


def test_files_written_by_export_teacher_run_as_a_files_teacher(recommender_run):
    """The recommender teacher exported in the released code's format (export-teacher), then used
    as a `files` teacher: its Table 5 row is the recommender's, to the rounding of the text files."""
    import subprocess
    import sys

    tdir = "results/teacher/tiny/sasrec-whole"
    res = subprocess.run([sys.executable, "-m", "dllm2rec", "export-teacher", "--teacher", tdir,
                          "--data", "results/data/tiny", "--out", "tocf"], cwd=recommender_run,
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    files = {"embeddings": "tocf/all_embeddings.pt", "label": "SASRec (files)"}
    for split in ("train", "test"):
        files[f"rank_{split}"], files[f"confidence_{split}"] = f"tocf/myrank_{split}.txt", f"tocf/confidence_{split}.txt"
    files["target_train"] = "tocf/target_train.txt"
    cfg = load_yaml(recommender_run / "rec.yaml")
    cfg["teachers"] = {"from-files": {"type": "files", "files": files}}
    cfg["tables"].update(teacher="from-files", backbones=["sasrec"], methods=["none", "dllm2rec"])
    write_config(recommender_run / "files.yaml", cfg)
    res = snakemake(recommender_run, "results/table5.csv", "--cores", "2", "--configfile", "files.yaml")
    assert res.returncode == 0, res.stdout[-5000:]
    from dllm2rec.tables import read_records

    records = read_records(str(recommender_run / "results" / "table5.csv"))
    teacher = [r for r in records if r["method"] == "teacher"]
    assert [r["model"] for r in teacher] == ["SASRec (files)"] * 2
    rec = json.loads((recommender_run / tdir / "metrics.json").read_text())
    assert [r["mean"] for r in teacher] == pytest.approx([rec["test"]["HR@20"], rec["test"]["NDCG@20"]], abs=1e-4)
    sasrec = [r for r in records if r["backbone"] == "sasrec" and r["metric"] == "HR@20"]
    assert [r["model"] for r in sasrec] == ["+None", "+DLLM2Rec"]
    assert sasrec[-1]["gain_s"] == sasrec[-1]["gain_s"] and sasrec[-1]["baseline"] == ""  # Gain.S, no baseline
