"""Serving latency and throughput of a trained student (``dllm2rec.recommend``).

    python benchmarks/recommend.py [--model results/students/.../model.pt [--data results/data/D]]
                                   [--threads 1] [--k 20] [--users 300] [--device cpu]

Without ``--model`` a DROS student (method ``none``, ``--epochs`` epochs) is trained on ml-100k
built by the data stage with every sequence kept (9,057 test histories, 1,682 items; a synthetic
dataset of the same shape if the build fails, and the output says so). What the student learned
does not change its cost, and a DLLM2Rec student costs the same at inference (its item table is
precomputed in model.pt).

Measured, each through :class:`dllm2rec.recommend.Recommender` (top-``k`` with titles):

- ``load``: model.pt + items.parquet -> ready Recommender;
- ``per user``: one history per call, ``--users`` calls over distinct test histories (median, p95);
- ``batch``: all test histories in one call (batches of 1024): seconds and histories/s; and the
  scoring alone (full ranking of every item, no top-k / titles), which is what the paper's
  1.6-1.8 s for a whole test set measures;
- the same per-user and batch figures for the ``torch.export`` program (``.pt2``);
- ``command line``: one ``python -m dllm2rec recommend`` process for one history (start-up,
  imports and load included).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import yaml  # noqa: E402

from dllm2rec.recommend import Recommender, export_student  # noqa: E402
from dllm2rec.student.train import load_sequences, train_student  # noqa: E402
from student_epoch import get_data  # noqa: E402


def train_default(tmp: Path, epochs: int, threads: int) -> tuple[Path, Path, str]:
    data, what = get_data(None, tmp)
    cfg = yaml.safe_load((ROOT / "config.yaml").read_text())
    student = {k: v for k, v in cfg["student"].items() if k != "backbones"}
    student.update(epochs=epochs, patience=epochs, device="cpu", backbone=cfg["student"]["backbones"]["dros"])
    out = tmp / "student"
    train_student(str(data), "dros", "none", {"student": student, "method": {"type": "none"}}, 0, str(out),
                  str(tmp / "work"), threads=threads)
    return out / "model.pt", data, f"dros+none ({epochs} epoch) on {what}"


def timed(fn, repeats: int = 1) -> float:
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def measure(rec: Recommender, histories: list[list[int]], k: int, users: int) -> dict:
    rec.recommend(histories[:8], k=k)  # warm-up
    per_user = []
    for h in histories[:users]:
        t0 = time.perf_counter()
        rec.recommend([h], k=k)
        per_user.append(time.perf_counter() - t0)
    per_user.sort()
    history, lengths = rec.encode_histories(histories)
    return {
        "per_user_ms_median": 1e3 * statistics.median(per_user),
        "per_user_ms_p95": 1e3 * per_user[int(0.95 * (len(per_user) - 1))],
        "batch_seconds": timed(lambda: rec.recommend(histories, k=k), 3),
        "batch_scoring_seconds": timed(lambda: [rec.scores(history[s:s + 1024], lengths[s:s + 1024])
                                                for s in range(0, len(history), 1024)], 3),
        "histories": len(histories),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model")
    ap.add_argument("--data")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--k", type=int, default=20)
    ap.add_argument("--users", type=int, default=300)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    machine = f"{platform.processor() or platform.machine()}, {args.threads} thread(s), torch {torch.__version__}, {args.device}"
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if args.model:
            model, data, what = Path(args.model), args.data, f"given model {args.model}"
        else:
            model, data, what = train_default(tmp, args.epochs, args.threads)
        t0 = time.perf_counter()
        rec = Recommender.load(model, data, args.device)
        load_seconds = time.perf_counter() - t0
        _, _, splits = load_sequences(rec.data)
        te = splits["test"]
        histories = [row[:n].tolist() for row, n in zip(te.history, te.lengths)]
        result = {"what": what, "machine": machine, "k": args.k, "n_items": rec.n_items,
                  "load_seconds": load_seconds, "model.pt": measure(rec, histories, args.k, args.users)}
        exported = tmp / "student.pt2"
        t0 = time.perf_counter()
        export_student(model, exported, args.device)
        result["export_seconds"] = time.perf_counter() - t0
        result["pt2"] = measure(Recommender.load(exported, data, args.device), histories, args.k, args.users)
        env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": str(args.threads)}
        cmd = [sys.executable, "-m", "dllm2rec", "recommend", "--model", str(model), "--history",
               *map(str, histories[0]), "--k", str(args.k), "--threads", str(args.threads), "--data", str(data)]
        result["cli_one_history_seconds"] = timed(lambda: subprocess.run(cmd, env=env, check=True,
                                                                          capture_output=True), 3)
        print(json.dumps(result, indent=1), flush=True)


if __name__ == "__main__":
    main()
