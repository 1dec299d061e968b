"""profiles/slurm against fake Slurm client commands: the teacher's GPU rules ask sbatch for a GPU,
the CPU rules do not. Nothing of the pipeline runs: tests/fake_slurm/fake_slurm.py records each
sbatch call and sacct reports every job COMPLETED, so Snakemake stops at once on the missing
outputs (--latency-wait 0 --retries 0). Also dry-runs profiles/slurm and profiles/local.

Everything happens in a copy of the workflow under tmp_path (the dllm2rec package is copied too,
so that its file times can be set and files still being written can get empty placeholders).
"""
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("snakemake")
pytest.importorskip("snakemake_executor_plugin_slurm")
yaml = pytest.importorskip("yaml")

REPO = Path(__file__).resolve().parents[1]
FAKE_SLURM = REPO / "tests" / "fake_slurm" / "fake_slurm.py"
SLURM_COMMANDS = ("sbatch", "sacct", "squeue", "scontrol", "sinfo", "sacctmgr", "sshare", "scancel", "srun")
WORKFLOW_FILES = ("Snakefile", "workflow", "config.yaml", "profiles", "envs")
GPU_RULES = {"sft", "item_embeddings", "teacher_shard", "knowledge"}
TIMEOUT = 45  # seconds per snakemake call; a run takes about 5

CONFIG = yaml.safe_load((REPO / "config.yaml").read_text())
PROFILE = yaml.safe_load((REPO / "profiles" / "slurm" / "config.yaml").read_text())
DATASET = CONFIG["tables"]["datasets"][0]
TEACHER = CONFIG["tables"]["teacher"]
TEACHER_DIR = f"results/teacher/{DATASET}/{TEACHER}"
DATA = [f"results/data/{DATASET}/{name}" for name in ("items.parquet", "sequences.parquet", "stats.json")]
BASE = f"resources/models/{TEACHER}/base.json"
# the plain student's first grid point (every Table 5 row has a grid, docs/protocol.md)
NONE_RUN = "none@" + ",".join(f"{k}={v[0]:g}" for k, v in CONFIG["methods"]["none"]["search"].items())
STUDENT = f"results/students/{DATASET}/{TEACHER}/gru4rec/{NONE_RUN}/seed0/metrics.json"


# --- running snakemake -----------------------------------------------------------------------------
def fake_bin(path: Path) -> Path:
    """One tiny wrapper per Slurm command, each calling fake_slurm.py with this interpreter."""
    path.mkdir(parents=True, exist_ok=True)
    for command in SLURM_COMMANDS:
        wrapper = path / command
        wrapper.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{FAKE_SLURM}" {command} "$@"\n')
        wrapper.chmod(0o755)
    if shutil.which("which") is None:  # the plugin probes the commands with `which`
        wrapper = path / "which"
        wrapper.write_text(
            f'#!/bin/sh\nexec "{sys.executable}" -c "import shutil, sys; p = shutil.which(sys.argv[1]); '
            f'print(p or \\"\\"); sys.exit(p is None)" "$1"\n'
        )
        wrapper.chmod(0o755)
    return path


def snakemake(workdir: Path, *args: str, slurm_dir: Path | None = None, timeout: int = TIMEOUT):
    """`python -m snakemake *args` in workdir, Slurm commands faked; returns (returncode, output)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "SNAKEMAKE_"))}
    if slurm_dir is not None:
        env["PATH"] = f"{fake_bin(slurm_dir / 'bin')}{os.pathsep}{env.get('PATH', '')}"
        env["FAKE_SLURM_DIR"] = str(slurm_dir / "state")
        env["FAKE_SLURM_STATE"] = "COMPLETED"
    proc = subprocess.Popen(
        [sys.executable, "-m", "snakemake", *args, "--nocolor"],
        cwd=workdir, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True,
    )
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # snakemake and whatever it started
        out, _ = proc.communicate()
        pytest.fail(f"snakemake {' '.join(args)} ran past {timeout} s:\n{out[-6000:]}")
    return proc.returncode, out


def slurm_run(workdir: Path, targets, *extra: str):
    """The slurm profile on targets; returns [(rule, wildcards, sbatch argv)] and the output."""
    slurm_dir = workdir.parent / f"slurm-{workdir.name}"
    _, out = snakemake(
        workdir, "--profile", "profiles/slurm", *targets, *extra,
        "--retries", "0", "--latency-wait", "0",
        "--seconds-between-status-checks", "1", "--slurm-init-seconds-before-status-checks", "1",
        slurm_dir=slurm_dir,
    )
    log = slurm_dir / "state" / "sbatch.jsonl"
    subs = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
    jobs = []
    for sub in subs:
        argv = [a for a in sub["argv"] if not a.startswith("--wrap")]
        comment = argv[argv.index("--comment") + 1]
        m = re.fullmatch(r"rule_(.+?)(?:_wildcards_(.*))?", comment)
        assert m, f"unexpected sbatch --comment {comment!r}"
        jobs.append((rule_kind(m.group(1)), m.group(2) or "", argv))
    return jobs, out


def rule_kind(rule: str) -> str:
    """`student` for a student job: one per run (rule `student`) or per fused group (rules
    `student_<backbone>_<method>_<hash>`, docs/students.md)."""
    return "student" if rule.startswith("student_") else rule


def gpu_args(argv):
    return [a for a in argv if a.startswith(("--gpus", "--gres", "--gpus-per")) or a == "-G"]


# --- the workflow copy -------------------------------------------------------------------------------
def missing_package_files(output: str):
    """Package files a MissingInputException names (files colleagues have not written yet)."""
    files, in_list = [], False
    for line in output.splitlines():
        if line.strip() == "affected files:":
            in_list = True
        elif in_list and line.startswith("        ") and line.strip():
            files.append(line.strip())
        else:
            in_list = False
    return [f for f in files if f.startswith("dllm2rec/")]


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """A workflow copy whose full DAG builds; returns (dir, output of `--profile profiles/slurm -n`)."""
    root = tmp_path_factory.mktemp("wf") / "wf"
    root.mkdir()
    for name in WORKFLOW_FILES:
        src = REPO / name
        (shutil.copytree if src.is_dir() else shutil.copy2)(src, root / name)
    shutil.copytree(REPO / "dllm2rec", root / "dllm2rec", ignore=shutil.ignore_patterns("__pycache__"))
    for _ in range(20):
        rc, out = snakemake(root, "--profile", "profiles/slurm", "-n")
        if rc == 0:
            return root, out
        missing = missing_package_files(out)
        assert missing, f"dry run failed for another reason than missing package files:\n{out[-6000:]}"
        for name in missing:  # placeholders, only in this copy
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            (root / name).touch()
    pytest.fail("too many missing package files")


def touch(path: Path, mtime: float, directory: bool = False):
    if directory:
        path.mkdir(parents=True, exist_ok=True)
        touch(path / "placeholder", mtime)
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("placeholder\n")
    os.utime(path, (mtime, mtime))


@pytest.fixture
def workdir(prepared, tmp_path):
    """A fresh copy with every source file two hours old and the dataset and base model built an
    hour ago, so the rules that need only those are the first to be submitted."""
    root = tmp_path / "wf"
    shutil.copytree(prepared[0], root, ignore=shutil.ignore_patterns(".snakemake"))
    now = time.time()
    for path in root.rglob("*"):
        os.utime(path, (now - 7200, now - 7200), follow_symlinks=False)
    for name in [*DATA, BASE]:
        touch(root / name, now - 3600)
    return root


# --- dry runs -----------------------------------------------------------------------------------------
def dry_run_jobs(output: str):
    """[(rule, {resource: value})] of every job a dry run prints."""
    jobs, rule = [], None
    for line in output.splitlines():
        m = re.fullmatch(r"(?:local)?rule (\w+):", line.strip())
        if m:
            rule = rule_kind(m.group(1))
            continue
        m = re.fullmatch(r"resources: (.*)", line.strip())
        if m and rule:
            jobs.append((rule, dict(kv.split("=", 1) for kv in m.group(1).split(", "))))
            rule = None
    return jobs


def test_slurm_dry_run_resources(prepared):
    jobs = dry_run_jobs(prepared[1])
    rules = {rule for rule, _ in jobs}
    assert GPU_RULES <= rules and {"dataset", "base_model", "teacher_gather", "student"} <= rules
    for rule, res in jobs:
        if rule in GPU_RULES:
            assert res.get("gpu") == "1", (rule, res)
            assert res.get("cpus_per_gpu") == str(PROFILE["set-resources"][rule]["cpus_per_gpu"]), (rule, res)
        else:
            assert "gpu" not in res and "gpu_model" not in res, (rule, res)
        assert int(res["mem_mb"]) > 0 and int(res["runtime"]) > 0, (rule, res)
    shards = [rule for rule, _ in jobs if rule == "teacher_shard"]
    # the profile's set-scatter, for the train split (the methods) and the test split (the teacher's metrics)
    assert len(shards) == 2 * PROFILE["set-scatter"]["teacher_gen"]


def test_local_dry_run(prepared):
    rc, out = snakemake(prepared[0], "--profile", "profiles/local", "-n")
    assert rc == 0, out[-6000:]
    jobs = dry_run_jobs(out)
    assert len([r for r, _ in jobs if r == "teacher_shard"]) == 2 * CONFIG["teacher_shards"]
    for rule, res in jobs:
        assert (res.get("gpu") == "1") == (rule in GPU_RULES), (rule, res)


# --- submissions --------------------------------------------------------------------------------------
def check_cpu_job(rule, argv):
    assert not gpu_args(argv), f"CPU rule {rule} asks for a GPU: {argv}"
    assert "--ntasks=1" in argv and any(a.startswith("--cpus-per-task=") for a in argv), argv
    assert "--mem" in argv and "-t" in argv, argv


def check_gpu_job(rule, argv, model=None):
    want = f"--gpus={model}:1" if model else "--gpus=1"
    assert gpu_args(argv) == [want], f"{rule}: want exactly {want}, got {gpu_args(argv)} in {argv}"
    assert "--mem" in argv and "-t" in argv, argv


def test_first_gpu_jobs_and_cpu_jobs(workdir):
    """Data and base model up to date: sft and item_embeddings (GPU) go out with the student and
    table4 (CPU)."""
    targets = [f"{TEACHER_DIR}/adapter", f"{TEACHER_DIR}/item_embeddings.parquet", STUDENT, "results/table4.csv"]
    jobs, out = slurm_run(workdir, targets)
    assert {rule for rule, _, _ in jobs} == {"sft", "item_embeddings", "student", "table4"}, out[-6000:]
    assert len(jobs) == 4, out[-6000:]
    for rule, _, argv in jobs:
        if rule in GPU_RULES:
            check_gpu_job(rule, argv)
            cpus = PROFILE["set-resources"][rule]["cpus_per_gpu"]
            assert f"--cpus-per-gpu={cpus}" in argv, argv
            assert "--mem" in argv and argv[argv.index("--mem") + 1] == "32000", argv  # teacher mem_mb default
        else:
            check_cpu_job(rule, argv)


def test_teacher_shards(workdir):
    """Adapter and item embeddings up to date as well: every generation shard is a GPU job."""
    now = time.time()
    touch(workdir / TEACHER_DIR / "adapter", now - 1800, directory=True)
    touch(workdir / TEACHER_DIR / "item_embeddings.parquet", now - 1800)
    jobs, out = slurm_run(workdir, [f"{TEACHER_DIR}/ranks/test.parquet"])
    shards = PROFILE["set-scatter"]["teacher_gen"]
    assert {rule for rule, _, _ in jobs} == {"teacher_shard"}, out[-6000:]
    assert sorted(wc.rsplit("_", 1)[-1] for _, wc, _ in jobs) == sorted(
        f"{i}-of-{shards}" for i in range(1, shards + 1)
    ), out[-6000:]
    for rule, _, argv in jobs:
        check_gpu_job(rule, argv)
        assert f"--cpus-per-gpu={PROFILE['set-resources'][rule]['cpus_per_gpu']}" in argv, argv


def test_gpu_model(workdir):
    """gpu_model set per rule on the command line: --gpus=<model>:1, and still none for CPU rules."""
    targets = [f"{TEACHER_DIR}/adapter", f"{TEACHER_DIR}/item_embeddings.parquet", STUDENT]
    jobs, out = slurm_run(
        workdir, targets, "--set-resources", "sft:gpu_model=a100", "item_embeddings:gpu_model=h100"
    )
    assert {rule for rule, _, _ in jobs} == {"sft", "item_embeddings", "student"}, out[-6000:]
    for rule, _, argv in jobs:
        if rule == "student":
            check_cpu_job(rule, argv)
        else:
            check_gpu_job(rule, argv, model={"sft": "a100", "item_embeddings": "h100"}[rule])


def test_gpu_students_share_a_gpu_through_shards(workdir):
    """The profile's comment: `student.gres: "shard:1"` asks Slurm for one GPU shard
    per student job (so that several share a GPU), and nothing else of the GPU kind."""
    text = (REPO / "profiles" / "slurm" / "config.yaml").read_text()
    assert 'gres: "shard:1"' in text  # the setting this test applies
    (workdir / "shard.yaml").write_text('student: {gres: "shard:1"}\n')
    targets = [f"results/students/{DATASET}/{TEACHER}/{b}/{NONE_RUN}/seed0/metrics.json" for b in ("gru4rec", "sasrec")]
    jobs, out = slurm_run(workdir, targets, "--configfile", "shard.yaml")
    assert [rule for rule, _, _ in jobs] == ["student", "student"], out[-6000:]
    for _, _, argv in jobs:
        assert gpu_args(argv) == ["--gres=shard:1"], argv
