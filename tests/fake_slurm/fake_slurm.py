#!/usr/bin/env python3
"""A stand-in for the Slurm client commands that snakemake-executor-plugin-slurm 2.8 calls.

Invoked as `fake_slurm.py <command> <args...>` (tests/test_profile_slurm.py puts one tiny
wrapper per command on PATH). State lives in $FAKE_SLURM_DIR:
  sbatch.jsonl  one JSON object per submission: {"jobid", "argv", "stdin"}
  jobid         the last job id handed out
  calls.log     every call, one line each (command + argv), for debugging
$FAKE_SLURM_STATE is the state sacct/squeue report for every submitted job (default FAILED,
so no job is ever "run" and Snakemake never waits for outputs).

What the plugin calls (site-packages/snakemake_executor_plugin_slurm):
  which sinfo/sacct/squeue      pick the status command (sacct when available)
  scontrol show config          MinJobAge, MaxArraySize
  sinfo -o %P                   default partition when slurm_partition is unset
  sacct -nu USER -o Account%256 guess an account when slurm_account is unset
  sacctmgr / sshare             validate an account
  sbatch --parsable ...         submission; prints the job id
  sacct -X --parsable2 ... --name RUN_UUID   status: "JOBID|STATE" lines
  squeue --format=%i|%T ... --name RUN_UUID  status (when squeue is the status command)
  sacct -j ID.STEP --format=Reason ...       failure reasons
  scancel IDS                   on interrupt
"""
import fcntl
import json
import os
import sys
from pathlib import Path


def state_dir() -> Path:
    path = Path(os.environ["FAKE_SLURM_DIR"])
    path.mkdir(parents=True, exist_ok=True)
    return path


def submissions():
    path = state_dir() / "sbatch.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def status_lines():
    state = os.environ.get("FAKE_SLURM_STATE", "FAILED")
    return "".join(f"{sub['jobid']}|{state}\n" for sub in submissions())


def sbatch(args):
    stdin = sys.stdin.read() if "/dev/stdin" in args else ""
    with open(state_dir() / "jobid.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # the plugin submits from two threads
        counter = state_dir() / "jobid"
        jobid = int(counter.read_text()) + 1 if counter.exists() else 1000
        counter.write_text(str(jobid))
        with open(state_dir() / "sbatch.jsonl", "a") as out:
            out.write(json.dumps({"jobid": jobid, "argv": args, "stdin": stdin}) + "\n")
    print(jobid)
    return 0


def sacct(args):
    if "--name" in args:  # the status query
        sys.stdout.write(status_lines())
    # account guess (-nu USER -o Account%256), failure reasons (-j ID.STEP), node lists: nothing
    return 0


def squeue(args):
    if "--name" in args:
        sys.stdout.write(status_lines())
    return 0


def scontrol(args):
    if args[:2] == ["show", "config"]:
        print("MinJobAge               = 300 sec")
        print("MaxArraySize            = 1001")
    return 0


def sinfo(args):
    print("PARTITION")
    print("cpu*")
    print("gpu")
    return 0


def accounts(args):
    print("my_account")
    return 0


COMMANDS = {
    "sbatch": sbatch,
    "sacct": sacct,
    "squeue": squeue,
    "scontrol": scontrol,
    "sinfo": sinfo,
    "sacctmgr": accounts,
    "sshare": accounts,
    "scancel": lambda args: 0,
    "srun": lambda args: 1,  # jobs must never run here
}


def main():
    command, args = sys.argv[1], sys.argv[2:]
    with open(state_dir() / "calls.log", "a") as log:
        log.write(json.dumps([command, *args]) + "\n")
    return COMMANDS[command](args)


if __name__ == "__main__":
    sys.exit(main())
