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


def test_a_checkpoint_is_due_once_its_interval_has_passed():
    now = [0.0]
    cadence = resume.Cadence(10, clock=lambda: now[0])
    due = []
    for t in (3, 9.9, 10, 15, 19.9, 20.5, 50):
        now[0] = t
        due.append(cadence.due())
    assert due == [False, False, True, False, False, True, True]
    assert all(resume.Cadence(0).due() for _ in range(3))  # 0: after every epoch


def test_the_epoch_loop_keeps_the_best_stops_on_patience_and_resumes(tmp_path):
    """dllm2rec/epochs.py, the loop of the students and the SFT: a strict improvement is the new
    best (the earlier of equal scores stays), `patience` epochs without one stop it, and a run
    killed after an epoch's checkpoint continues to the same end."""
    pytest.importorskip("torch")
    from dllm2rec import epochs

    scores = {1: 0.2, 2: 0.5, 3: 0.5, 4: 0.4, 5: 0.9, 6: 0.1}  # epoch 5 is never reached

    def train(loop, state, kept, kill_after=None):
        def train_epoch(epoch):
            return {"epoch": epoch, "score": scores[epoch]}, scores[epoch], f"weights of {epoch}"

        def checkpoint():
            loop.checkpoint(state, {"kept": list(kept)})
            if state["epoch"] == kill_after:
                raise KeyboardInterrupt

        loop.run(state, train_epoch, keep=lambda epoch, w: kept.append(w), describe=lambda e, row: f"epoch {e}",
                 checkpoint=checkpoint)

    said = []
    loop = epochs.EpochLoop(tmp_path / "a", "fp", epochs=6, patience=2, score_name="score", log=said.append)
    state, kept = epochs.new_state(), []
    train(loop, state, kept)
    assert [r["epoch"] for r in state["log"]] == [1, 2, 3, 4]
    assert (state["best_epoch"], state["best_score"], state["bad_epochs"], state["stopped"]) == (2, 0.5, 2, True)
    assert kept == ["weights of 1", "weights of 2"]
    assert said[-1] == "epoch 4; best score 0.5000 at epoch 2, stopping: 2 epochs without improvement"

    killed = epochs.EpochLoop(tmp_path / "b", "fp", epochs=6, patience=2, score_name="score", log=said.append)
    state2, kept2 = epochs.new_state(), []
    with pytest.raises(KeyboardInterrupt):
        train(killed, state2, kept2, kill_after=2)
    restored = {}
    state3 = killed.resume(lambda ck: restored.update(kept=ck["kept"]))
    assert state3["epoch"] == 2 and said[-1].startswith("resuming from") and said[-1].endswith("after epoch 2")
    kept3 = restored["kept"]
    train(killed, state3, kept3)
    assert state3 == state and kept3 == kept
    # lower is better (the SFT's validation loss): the first epoch is the first best
    low = epochs.new_state()
    assert epochs.keep_best(low, 1, 3.0, 1, higher_is_better=False) and not epochs.keep_best(low, 2, 3.0, 1, False)
    assert low["stopped"] and low["best_epoch"] == 1
