"""Resumable jobs (dllm2rec/resume.py): what a checkpoint is keyed by, and a cancelled job's last words."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap

import pytest

from dllm2rec import resume


def test_fingerprint_covers_input_content_not_its_path(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "sequences.parquet").write_bytes(b"first sample")
    fp = resume.job_fingerprint({"lr": 1}, [data])
    assert resume.job_fingerprint({"lr": 1}, [data]) == fp
    (data / ".sequences.parquet.x.tmp").write_bytes(b"an atomic write under way")  # hidden: ignored
    assert resume.job_fingerprint({"lr": 1}, [data]) == fp
    (data / "sequences.parquet").write_bytes(b"other sample")  # same path, other content
    assert resume.job_fingerprint({"lr": 1}, [data]) != fp
    assert resume.job_fingerprint({"lr": 2}, [data]) != resume.job_fingerprint({"lr": 1}, [data])


def test_fingerprint_covers_the_code(tmp_path, monkeypatch):
    package = tmp_path / "dllm2rec"
    shutil.copytree(resume.PACKAGE / "teacher", package / "teacher")
    monkeypatch.setattr(resume, "PACKAGE", package)
    fp = resume.job_fingerprint({"lr": 1})
    with open(package / "teacher" / "sft.py", "a") as fh:
        fh.write("\n# an edit\n")
    assert resume.job_fingerprint({"lr": 1}) != fp


def test_checkpoint_of_other_inputs_is_ignored(tmp_path):
    pytest.importorskip("torch")
    resume.save_checkpoint(tmp_path, "aaaa", {"epoch": 3})
    assert resume.load_checkpoint(tmp_path, "aaaa")["epoch"] == 3
    said = []
    assert resume.load_checkpoint(tmp_path, "bbbb", log=said.append) is None
    assert "made from other inputs" in said[0]
    resume.remove_checkpoint(tmp_path)
    assert not resume.checkpoint_path(tmp_path).exists()


def test_sigterm_is_reported_with_where_the_job_was(tmp_path):
    script = textwrap.dedent("""
        import os, signal
        from dllm2rec import resume
        state = {"epoch": 0}
        with resume.report_kill(lambda: f"epoch {state['epoch'] + 1}/5"):
            state["epoch"] = 2
            os.kill(os.getpid(), signal.SIGTERM)
            print("not reached")
    """)
    env = dict(os.environ, PYTHONPATH=str(resume.PACKAGE.parent))
    res = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=60)
    assert res.returncode == 143, res.stderr
    assert "killed by SIGTERM at epoch 3/5" in res.stdout
    assert "not reached" not in res.stdout


def test_student_log_reads_as_progress(tmp_path, capsys):
    """Epoch i/N with the best so far on every line, a final summary; a changed dataset at the same
    path is not resumed from a checkpoint of the old one."""
    from synthetic import write_synthetic_dataset

    from dllm2rec.student import train as train_mod

    write_synthetic_dataset(tmp_path / "data", n_items=30, n_sequences=200, seed=0)
    params = {"student": {"hidden": 16, "dropout": 0.1, "lr": 0.005, "batch_size": 64, "weight_decay": 0.0,
                          "epochs": 3, "patience": 5, "eval_batch_size": 256, "device": "cpu", "backbone": {}},
              "method": {"type": "none"}}
    out, work = tmp_path / "out", tmp_path / "work"
    train_mod.train_student(str(tmp_path / "data"), "gru4rec", "none", params, 0, str(out), str(work), threads=1)
    log = capsys.readouterr().out
    assert "epoch 1/3: loss" in log and "epoch 3/3: loss" in log and "best NDCG@20" in log
    assert "done: best epoch" in log and "test HR@20" in log
    assert not resume.checkpoint_path(work).exists()

    fp_old = resume.job_fingerprint([1], [tmp_path / "data"])
    write_synthetic_dataset(tmp_path / "data", n_items=30, n_sequences=200, seed=1)  # same path, new data
    assert resume.job_fingerprint([1], [tmp_path / "data"]) != fp_old
