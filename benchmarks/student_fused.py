"""N students fused against the same N trained one by one: member-epochs per second, peak memory.

    python benchmarks/student_fused.py [--quick] [--members 10] [--backbone dros] [--method dllm2rec]
                                       [--data DIR] [--sample 1500] [--epochs 5] [--threads 1] [--device cpu]

The members are the default's kind of DLLM2Rec grid: ``lambda_d`` spread over (0, 1] and
``weight_decay`` alternating between 1e-6 and 0, seed 0 (``--seeds 3`` spreads them over seeds
0..2 too). **Fused**: one :func:`dllm2rec.student.fused.train_group` over all N. **Separate**:
each member through :func:`dllm2rec.student.train.train_student`, today's per-point trainer, one
after the other in this process (so the separate figure has no process start-up; a per-point
Snakemake job pays `python -m dllm2rec` start-up, torch import included, on top: printed as
``startup_seconds``). Same data, same epochs, patience off (every member runs ``--epochs``).
Throughput = N x epochs / wall seconds of the training call (data loading, building, every
epoch with its validation, test and the run files included).

Data: ``--data`` (a built dataset folder) or ml-100k built with the data stage, capped to the
default's ``--sample`` train sequences (1500; ``--sample 0`` keeps the whole split, 72,456 train
rows), else a synthetic dataset of that shape (the output says which). Teacher: random, of the
contract's schema (benchmarks/student_epoch.py), width 576 (SmolLM2-135M).
``--quick`` (under 5 minutes on 2 cores): 10 members, 10 epochs, the default's sample. The last
line printed is ``ratio: X`` (fused / separate throughput).
"""
from __future__ import annotations

import argparse
import json
import platform
import resource
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
from student_epoch import write_random_teacher  # noqa: E402

from dllm2rec.evaluate import NDCG  # noqa: E402
from dllm2rec.student.fused import train_group  # noqa: E402
from dllm2rec.student.train import train_student  # noqa: E402


def get_data(arg: str | None, tmp: Path, sample: int) -> tuple[Path, str]:
    if arg:
        return Path(arg), f"given dataset {arg}"
    out = tmp / "ml-100k"
    cap = {"train": sample, "valid": 200, "test": 200, "seed": 0} if sample else None
    try:
        from dllm2rec.data.build import build_dataset

        build_dataset("ml-100k", {"source": "ml-100k", "sample_rule": "movielens", "noun": "movie",
                                  "max_history": 10, "sample": cap}, str(out),
                      cache=str(ROOT / "resources" / "downloads"))
        return out, f"ml-100k (data stage, {'train ' + str(sample) + ' / 200 / 200' if sample else 'all sequences'})"
    except Exception as err:  # noqa: BLE001  (offline: fall back, and say so)
        sys.path.insert(0, str(ROOT / "tests"))
        from synthetic import write_synthetic_dataset

        print(f"could not build ml-100k ({err}); using a synthetic dataset of its shape", file=sys.stderr)
        n = int(sample / 0.8) if sample else 90570
        write_synthetic_dataset(out, n_items=1682, n_sequences=n, p_rule=0.3, min_history=10)
        return out, f"SYNTHETIC, ml-100k-shaped ({n} sequences, 1,682 items)"


def members(n: int, seeds: int, student: dict, method: dict, out: Path) -> list[dict]:
    ms = []
    for i in range(n):
        s = {**student, "weight_decay": 1.0e-6 if i % 2 == 0 else 0.0}
        ms.append({"method": f"m{i}", "params": {"student": s, "method": {**method, "lambda_d": round((i + 1) / n, 3)}},
                   "seed": i % seeds, "out": str(out / f"m{i}")})
    return ms


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def startup_seconds() -> float:
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import dllm2rec.student.train"], check=True, cwd=ROOT)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--members", type=int, default=10)
    ap.add_argument("--seeds", type=int, default=1)
    ap.add_argument("--backbone", default="dros")
    ap.add_argument("--method", default="dllm2rec")
    ap.add_argument("--data")
    ap.add_argument("--sample", type=int, default=1500)
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--separate", choices=["eager", "none"], default="eager",
                    help="time the separate runs too (none: fused only, e.g. for many members on a GPU)")
    args = ap.parse_args()
    if args.quick:
        args.members, args.epochs, args.sample = 10, 10, 1500
    torch.set_num_threads(args.threads)
    cfg = yaml.safe_load((ROOT / "config.yaml").read_text())
    student = {k: v for k, v in cfg["student"].items() if k not in ("backbones", "device")}
    student.update(epochs=args.epochs, patience=args.epochs, backbone=cfg["student"]["backbones"][args.backbone])
    method = {k: v for k, v in cfg["methods"][args.method].items() if k != "search"}
    machine = f"{platform.processor() or platform.machine()}, {args.threads} threads, torch {torch.__version__}, {args.device}"
    if args.device.startswith("cuda"):
        machine += f" ({torch.cuda.get_device_name()})"
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        data, what = get_data(args.data, tmp, args.sample)
        teacher = tmp / "teacher"
        write_random_teacher(data, teacher, 576)
        ms = members(args.members, args.seeds, student, method, tmp / "fused")
        result = {"members": args.members, "epochs": args.epochs, "data": what, "machine": machine,
                  "backbone": args.backbone, "method": args.method}
        if args.device.startswith("cuda"):
            torch.cuda.reset_peak_memory_stats()
        t0 = time.perf_counter()
        fused = train_group(str(data), args.backbone, ms, str(tmp / "work-fused"), teacher=str(teacher),
                            device=args.device)
        result["fused_seconds"] = time.perf_counter() - t0
        result["fused_member_epochs_per_s"] = args.members * args.epochs / result["fused_seconds"]
        result["fused_peak_mb"] = (torch.cuda.max_memory_allocated() / 2**20 if args.device.startswith("cuda")
                                   else peak_rss_mb())
        result[f"fused_valid_{NDCG}"] = [m["valid"][NDCG] for m in fused]
        if args.separate == "eager":
            t0 = time.perf_counter()
            sep = [train_student(str(data), args.backbone, m["method"], m["params"], m["seed"], str(tmp / "sep" / m["method"]),
                                 str(tmp / "work-sep" / m["method"]), teacher=str(teacher), device=args.device)
                   for m in ms]
            result["separate_seconds"] = time.perf_counter() - t0
            result["separate_member_epochs_per_s"] = args.members * args.epochs / result["separate_seconds"]
            result[f"separate_valid_{NDCG}"] = [m["valid"][NDCG] for m in sep]
            result["startup_seconds"] = startup_seconds()
        print(json.dumps(result), flush=True)
        if args.separate == "eager":
            print(f"ratio: {result['fused_member_epochs_per_s'] / result['separate_member_epochs_per_s']:.2f}")


if __name__ == "__main__":
    main()
