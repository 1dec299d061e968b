"""The workflow's DAG, config validation and style, checked with real Snakemake dry runs."""
import math
import re
from pathlib import Path
import subprocess
import sys

import pytest

from workflow_utils import ROOT, copy_project, job_counts, load_yaml, merged, snakemake, write_config


@pytest.fixture
def project(tmp_path):
    return copy_project(tmp_path)


def n_points(entry):
    """Runs per dataset x backbone x seed of a method: one, or one per point of its search grid."""
    return math.prod(len(values) for values in entry.get("search", {}).values())


def student_jobs(counts):
    """Split a dry run's job counts: ({fused group rule: jobs}, the other rules' counts). Every
    group of runs that train together is a rule `student_<backbone>_<method>_<hash>`."""
    groups = {k: v for k, v in counts.items() if k.startswith("student_")}
    return groups, {k: v for k, v in counts.items() if k not in groups}



def test_default_dry_run_shows_the_whole_paper_dag(project):
    res = snakemake(project, "-n", "--cores", "2", "results/table5.csv")
    assert res.returncode == 0, res.stdout
    counts = job_counts(res.stdout)
    cfg = load_yaml(ROOT / "config.yaml")
    runs = sum(n_points(cfg["methods"][m]) for m in cfg["tables"]["methods"])
    # the default's budget: a 2-point grid for every row (docs/protocol.md)
    assert all(n_points(cfg["methods"][m]) == 2 for m in cfg["tables"]["methods"])
    assert runs > len(cfg["tables"]["methods"])
    shards = cfg["teacher_shards"]
    groups, counts = student_jobs(counts)
    assert counts == {
        "dataset": 1, "popularity": 1, "base_model": 1, "sft": 1, "item_embeddings": 1,
        # the teacher's train split (the distillation methods) and test split (its metrics); no
        # method reads valid teacher output (KAR reads per-user knowledge, not generations)
        "teacher_shard": 2 * shards, "teacher_gather": 2, "teacher_metrics": 1,
        "knowledge": 1, "knowledge_embeddings": 1,  # KAR's knowledge (base model, then the text encoder)
        "selection": 1, "table5": 1,
    }
    # fused training (student.fuse: true): one job per backbone x method, a grid's points together
    assert sorted(g.rsplit("_", 1)[0] for g in groups) == sorted(
        f"student_{b}_{m}" for b in cfg["tables"]["backbones"] for m in cfg["tables"]["methods"])
    assert set(groups.values()) == {1}
    # a grid point has its own run folder
    assert "/dros/none@weight_decay=0/seed0/metrics.json" in res.stdout and "/dros/dllm2rec@lambda_d=" in res.stdout
    assert "/dros/dllm2rec/seed0/" not in res.stdout and "/dros/none/seed0/" not in res.stdout


def raw_placeholders(project, cfg):
    for ds in cfg["datasets"].values():
        for path in ds.get("paths", {}).values():
            p = project / path
            p.parent.mkdir(parents=True, exist_ok=True)
            p.touch()


def test_paper_config_dry_runs_every_table(project):
    cfg = load_yaml(project / "configs" / "paper.yaml")
    raw_placeholders(project, cfg)
    # --quiet rules: the job table without thousands of job descriptions
    res = snakemake(project, "-n", "--quiet", "rules", "--cores", "2", "--configfile", "configs/paper.yaml")
    assert res.returncode == 0, res.stdout[-3000:]
    counts = job_counts(res.stdout)
    t = cfg["tables"]
    methods = merged(load_yaml(project / "config.yaml"), cfg)["methods"]
    # the paper's DLLM2Rec grid (§4.1.4): lambda_d in {0.1, ..., 1.0} x weight decay in {1e-4, ..., 1e-7, 0}
    assert n_points(methods["dllm2rec"]) == 50
    assert all(n_points(methods[m]) > 1 for m in t["methods"])  # tests/test_protocol.py: the grids
    grid = len(t["datasets"]) * len(t["backbones"]) * len(t["seeds"])
    ablations = {m for k in ("table7", "table8") for m in t["ablation"][k]} - set(t["methods"])
    sweeps = sum(len(t["figure2"][p]) for p in ("lambda_d", "gamma_p", "gamma_c", "gamma_o"))
    n_extra = len(t["datasets"]) * len(t["seeds"]) * (len(ablations) + sweeps)
    n_runs = grid * sum(n_points(methods[m]) for m in t["methods"]) + n_extra
    groups, counts = student_jobs(counts)
    # thousands of runs, trained in at most 600 jobs (docs/protocol.md); every row has its jobs
    assert n_runs > 3000 and sum(groups.values()) <= 600
    for b in t["backbones"]:
        for m in t["methods"]:
            assert any(g.startswith(f"student_{b}_{re.sub(r'[^A-Za-z0-9]', '_', m)}_") for g in groups), (b, m)
    assert len(t["methods"]) == 12 and len(t["datasets"]) == 3  # both DLLM2Rec variants
    for rule in ("table4", "table5", "table6", "ablation_table", "figure2", "dataset", "sft", "table1", "table2",
                 "table3", "teacher_table", "valid_ndcg_figure", "sft_loss_figure", "table5_bars", "selection"):
        assert rule in counts


def test_evidence_config_dry_runs_table5_with_three_seeds_and_the_search(project):
    cfg = merged(load_yaml(project / "config.yaml"), load_yaml(project / "configs" / "evidence.yaml"))
    res = snakemake(project, "-n", "--quiet", "rules", "--cores", "2", "--configfile", "configs/evidence.yaml")
    assert res.returncode == 0, res.stdout[-3000:]
    counts = job_counts(res.stdout)
    t = cfg["tables"]
    assert len(t["seeds"]) == 3 and n_points(cfg["methods"]["dllm2rec"]) > 1 and "none" in t["methods"]
    groups, counts = student_jobs(counts)
    # a method's points and seeds train as one group per backbone
    assert len(groups) == len(t["backbones"]) * len(t["methods"]) and set(groups.values()) == {1}
    assert cfg["teachers"]["smollm2-135m"]["grounding"]["popularity_gamma"] > 0
    for rule in ("table5", "table6", "selection", "teacher_metrics", "popularity"):
        assert rule in counts


@pytest.mark.parametrize("train_split", ["whole", "sampled"])
def test_a_recommender_teacher_dry_runs_without_any_llm_rule(project, train_split):
    overlay(project, "rec.yaml", **{
        "teachers/sasrec-whole": {"type": "recommender", "recommender": {"backbone": "sasrec", "train_split": train_split}},
        "tables/teacher": "sasrec-whole", "tables/methods": ["none", "hint", "rd", "dllm2rec"]})
    res = snakemake(project, "-n", "--cores", "2", "--configfile", "rec.yaml")
    assert res.returncode == 0, res.stdout[-3000:]
    counts = job_counts(res.stdout)
    assert counts["recommender_teacher"] == 1 and counts["teacher_metrics"] == 1
    assert counts.get("teacher_train_data", 0) == (train_split == "whole")
    assert not {"base_model", "sft", "item_embeddings", "teacher_shard", "teacher_gather"} & set(counts)
    assert "sft_loss_figure" not in counts and {"table1", "table2", "table3", "table5", "table6"} <= set(counts)
    assert "results/teacher/ml-100k/sasrec-whole/ranks/train.parquet" in res.stdout


def files_teacher(project, splits=("train",), target=False):
    """teachers.mine: released-format files (placeholders: a dry run reads none of them)."""
    folder = project / "tocf"
    folder.mkdir(exist_ok=True)
    files = {"embeddings": "tocf/all_embeddings.pt", "label": "LLaRA (files)"}
    for split in splits:
        files[f"rank_{split}"], files[f"confidence_{split}"] = f"tocf/myrank_{split}.txt", f"tocf/confidence_{split}.txt"
    if target:
        files["target_train"] = "tocf/target_train.txt"
    for path in files.values():
        if path.startswith("tocf/"):
            (project / path).touch()
    return {"type": "files", "files": files}


@pytest.mark.parametrize("splits", [("train",), ("train", "valid", "test")])
def test_a_files_teacher_dry_runs_its_imports(project, splits):
    overlay(project, "files.yaml", **{
        "teachers/mine": files_teacher(project, splits, target=True), "tables/teacher": "mine",
        "tables/methods": ["none", "hint", "rd", "dllm2rec"]})
    res = snakemake(project, "-n", "--cores", "2", "--configfile", "files.yaml")
    assert res.returncode == 0, res.stdout[-3000:]
    counts = job_counts(res.stdout)
    # what the runs read: train ranks (distillation) and test ranks (the teacher's row); valid only on demand
    assert counts["teacher_files_ranks"] == 1 + ("test" in splits) and counts["teacher_files_embeddings"] == 1
    assert counts["teacher_metrics"] == 1 and counts["table5"] == 1
    assert not {"base_model", "sft", "teacher_shard", "recommender_teacher"} & set(counts)
    # Tables 1-3 compare the teacher's test ranks with a student's: only when they are given
    assert ("table2" in counts) == ("test" in splits)


@pytest.mark.parametrize("change, message", [
    ({"methods/dllm2rec/variant": "paper"}, "which the released-format files of teacher 'mine' do not carry: give "
                                           "teachers.mine.files.target_train"),
    ({"tables/methods": ["none", "kar"]}, "method 'kar' reads the teacher's knowledge_item_embeddings"),
    ({"methods/dllm2rec/variant": "official", "rank_width": 5},
     "methods.dllm2rec.k = 10 is larger than the 5 items per row of teachers.mine.files.rank_train"),
    ({"teachers/mine/files/confidence_valid": "tocf/myrank_train.txt"}, "give rank_valid and confidence_valid together"),
    ({"teachers/mine/files/rank_test": "tocf/nowhere.txt", "teachers/mine/files/confidence_test": "tocf/nowhere.txt"},
     "teachers.mine.files.rank_test = 'tocf/nowhere.txt' does not exist"),
])
def test_a_files_teacher_refuses_what_it_cannot_feed(project, change, message):
    cfg = {"teachers/mine": files_teacher(project), "tables/teacher": "mine", "tables/methods": ["none", "dllm2rec"]}
    overlay(project, "files.yaml", **cfg)
    cfg_file = load_yaml(project / "files.yaml")
    change = dict(change)
    if "rank_width" in change:  # the rank file's first line
        (project / "tocf" / "myrank_train.txt").write_text(" ".join(map(str, range(change.pop("rank_width")))) + "\n")
    for dotted, value in change.items():
        node = cfg_file
        *keys, last = dotted.split("/")
        for k in keys:
            node = node[k]
        node[last] = value
    write_config(project / "files.yaml", cfg_file)
    res = snakemake(project, "-n", "--cores", "1", "--configfile", "files.yaml")
    assert res.returncode != 0 and message in res.stdout, res.stdout[-2000:]


def test_a_files_teachers_paths_reach_the_shell_as_one_word_each(project):
    """As tests/test_shell_quoting.py for the files teacher's own keys: a path carrying a shell
    payload stays one quoted word of the import commands."""
    import shlex

    inject = "$(touch PWNED)`touch PWNED`'\"x"
    folder = project / f"tocf{inject}"
    folder.mkdir()
    files = {k: f"tocf{inject}/{name}" for k, name in (
        ("rank_train", "myrank_train.txt"), ("confidence_train", "confidence_train.txt"),
        ("target_train", "target_train.txt"), ("embeddings", "all_embeddings.pt"))}
    for path in files.values():
        (project / path).touch()
    overlay(project, "files.yaml", **{"teachers/mine": {"type": "files", "files": {**files, "label": f"L{inject}"}},
                                      "tables/teacher": "mine", "tables/methods": ["none", "dllm2rec"]})
    res = snakemake(project, "-n", "-p", "--cores", "1", "--configfile", "files.yaml")
    assert res.returncode == 0, res.stdout[-3000:]
    seen = {}
    for line in res.stdout.splitlines():
        if "-m dllm2rec " in line:
            words = shlex.split(line)
            seen[words[words.index("dllm2rec") + 1]] = words
    assert seen["import-teacher-ranks"][seen["import-teacher-ranks"].index("--rank") + 1] == files["rank_train"]
    assert seen["import-teacher-ranks"][seen["import-teacher-ranks"].index("--target") + 1] == files["target_train"]
    assert seen["import-teacher-embeddings"][seen["import-teacher-embeddings"].index("--embeddings") + 1] == \
        files["embeddings"]
    assert not list(project.rglob("PWNED"))


def test_control_config_dry_runs_a_recommender_teacher_and_both_variants(project):
    cfg = merged(load_yaml(project / "config.yaml"), load_yaml(project / "configs" / "control.yaml"))
    res = snakemake(project, "-n", "--quiet", "rules", "--cores", "2", "--configfile", "configs/control.yaml")
    assert res.returncode == 0, res.stdout[-3000:]
    counts = job_counts(res.stdout)
    t = cfg["tables"]
    assert cfg["teachers"][t["teacher"]]["type"] == "recommender" and len(t["seeds"]) == 3
    groups, counts = student_jobs(counts)  # fused training: a job per backbone x method, its seeds together
    assert sorted(g.rsplit("_", 1)[0] for g in groups) == sorted(
        f"student_{b}_{m}".replace("-", "_") for b in t["backbones"] for m in t["methods"])
    assert counts["recommender_teacher"] == counts["teacher_train_data"] == 1
    assert not {"sft", "teacher_shard", "base_model"} & set(counts)
    assert {"table5", "table6", "selection", "teacher_metrics"} <= set(counts)


def test_missing_raw_file_names_the_key_and_the_fix(project):
    res = snakemake(project, "-n", "--cores", "1", "--configfile", "configs/paper.yaml")
    assert res.returncode != 0
    assert "datasets.games.paths.reviews" in res.stdout
    assert "does not exist" in res.stdout


def overlay(project, name, **changes):
    cfg = load_yaml(project / "config.yaml")
    for dotted, value in changes.items():
        node = cfg
        *keys, last = dotted.split("/")
        for k in keys:
            node = node[k]
        node[last] = value
    return write_config(project / name, cfg)


@pytest.mark.parametrize(
    "change, message",
    [
        ({"student/lr": "1e-4"}, "'1e-4' is not of type 'number'"),
        ({"tables/datasets": ["ml-100k", "nope"]}, "tables.datasets names 'nope'"),
        ({"tables/methods": ["none", "missing"]}, "method 'missing' is not defined"),
        ({"methods/none/type": "bogus"}, "'bogus' is not one of"),
        ({"methods/dllm2rec/lamda_d": 0.5}, "lamda_d"),
        ({"datasets/ml-100k/source": "netflix"}, "'netflix' is not one of"),
        ({"tables/backbones": ["bert4rec"]}, "'bert4rec' is not one of"),
        ({"methods/dllm2rec/search": {"lamda_d": [0.1]}}, "methods.dllm2rec.search.lamda_d: not an option of this method"),
        ({"methods/hint/search": {"weight_decay": ["1e-4"]}}, "methods.hint.search.weight_decay: student.weight_decay takes numbers"),
        ({"methods/dllm2rec/search": {"projector": ["linear", "cnn"]}}, "methods.dllm2rec.projector must be one of linear, mlp; got 'cnn' (in methods.dllm2rec.search)"),
        ({"methods/dllm2rec/search": {"lambda_d": []}}, "search"),
        # teacher kinds (dllm2rec/teacher/kinds.py): KAR and LLM-CF need an LLM's texts
        ({"teachers/rec": {"type": "recommender", "recommender": {}}, "tables/teacher": "rec"},
         "method 'kar' reads the teacher's knowledge_item_embeddings, knowledge_user_embeddings, which teacher 'rec' (type recommender) does not have"),
        ({"teachers/rec": {"type": "recommender", "recommender": {}, "base_model": "x"}}, "teachers"),
        ({"teachers/rec": {"type": "recommender"}}, "'recommender' is a required property"),
    ],
)
def test_bad_config_fails_before_any_job_with_the_key(project, change, message):
    overlay(project, "bad.yaml", **change)
    res = snakemake(project, "-n", "--cores", "1", "--configfile", "bad.yaml")
    assert res.returncode != 0
    assert message in res.stdout, res.stdout[-2000:]


def test_lint_is_clean(project):
    res = snakemake(project, "--lint")
    assert res.returncode == 0, res.stdout
    assert "Congratulations" in res.stdout


def test_snakefmt_leaves_rules_unchanged():
    res = subprocess.run([sys.executable, "-m", "snakefmt", "--check", "Snakefile", "workflow"], cwd=ROOT, capture_output=True, text=True)
    assert res.returncode == 0, res.stdout


def test_a_method_file_is_code_of_its_own_students_only(project):
    """Editing one method's module reruns only its students: a student job's code inputs (a run's
    or a fused group's) hold its method's module (and what that imports: dcd -> rrd), never
    another method's."""
    import re

    res = snakemake(project, "-n", "--cores", "1")
    assert res.returncode == 0, res.stdout[-3000:]
    seen = {}
    for block in re.split(r"\n(?=\[)", res.stdout):  # one job per block, each opening with its date
        if not re.search(r"^rule student\w*:", block, flags=re.M):
            continue
        outputs = re.search(r"output: (.*)", block).group(1)
        method = Path(outputs.split(", ")[0]).parts[5].split("@")[0]  # results/students/d/t/b/METHOD/...
        inputs = re.search(r"input: (.*)", block).group(1).split(", ")
        seen[method] = {Path(f).stem for f in inputs if f.startswith("dllm2rec/distill/")}
    assert {"rd", "dcd", "none"} <= set(seen), seen.keys()
    method_files = {"none", "hint", "htd", "rd", "cd", "rrd", "dcd", "unkd", "kar", "llmcf", "dllm2rec"}
    assert seen["rd"] & method_files == {"rd"}
    assert seen["dcd"] & method_files == {"dcd", "rrd"}
    assert seen["none"] & method_files == {"none"}
    assert {"base", "common", "spec", "methods"} <= seen["rd"]  # the shared modules: every student's


def rule_threads(stdout: str, rule: str) -> set[int]:
    """The threads of every job of ``rule`` in a dry run's job blocks (1 where none is printed)."""
    found, current = set(), None
    for line in stdout.splitlines() + ["[end]"]:
        line = line.strip()
        if line.startswith("[") or re.fullmatch(r"(local)?rule \S+:", line):
            if current is not None:
                found.add(current)
            current = 1 if line in (f"rule {rule}:", f"localrule {rule}:") else None
        elif current is not None and line.startswith("threads:"):
            current = int(line.split(":")[1])
    return found


@pytest.mark.parametrize("cores, expected", [(2, 1), (5, 2), (32, 8)])
def test_teacher_jobs_take_half_the_cores_at_most_eight(project, cores, expected):
    # two narrow teacher jobs beat one wide one on a small CPU (docs/benchmarks.md)
    res = snakemake(project, "-n", "--cores", str(cores), "results/table5.csv")
    assert res.returncode == 0, res.stdout
    for rule in ("sft", "item_embeddings", "teacher_shard", "knowledge"):
        assert rule_threads(res.stdout, rule) == {expected}, rule
    assert rule_threads(res.stdout, "knowledge_embeddings") == {min(2, cores)}
