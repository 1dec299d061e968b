"""Long jobs' progress lines reach the terminal as well as the job's log (dllm2rec.io.progress)."""
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
JOB = ("from dllm2rec.io import ProgressStream, progress\n"
       "print('noise only for the log')\n"
       "progress('epoch 1/3: loss 0.5')\n"
       "s = ProgressStream(); s.write('generate:  10%|#  | 1/10\\rgenerate: 100%|###| 10/10\\n'); s.flush()\n")


def run_as_a_rule(tmp_path, env_value):
    """The job as a rule runs it: `DLLM2REC_PROGRESS={log:q} python ... 3>&2 > {log} 2>&1`."""
    log = tmp_path / "job.log"
    script = tmp_path / "job.py"
    script.write_text(JOB)
    prefix = f"DLLM2REC_PROGRESS={env_value} " if env_value else ""
    cmd = f"{prefix}{sys.executable} {script} 3>&2 > {log} 2>&1"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    res = subprocess.run(["bash", "-c", cmd], env=env, capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    return res.stderr, log.read_text()


def test_progress_lines_go_to_the_terminal_and_the_log(tmp_path):
    terminal, log = run_as_a_rule(tmp_path, "results/logs/students/ds/t/sasrec/none/seed0.log")
    assert "[students/ds/t/sasrec/none/seed0] epoch 1/3: loss 0.5" in terminal.splitlines()
    assert "[students/ds/t/sasrec/none/seed0] generate: 100%|###| 10/10" in terminal.splitlines()
    assert "noise" not in terminal  # only the progress lines
    assert "noise only for the log" in log and "epoch 1/3: loss 0.5" in log and "10/10" in log


def test_without_the_rules_fd_only_the_log(tmp_path):
    terminal, log = run_as_a_rule(tmp_path, "")
    assert terminal == "" and "epoch 1/3: loss 0.5" in log
