"""The control of docs/results.md: distillation from a teacher that does carry signal the students lack.

A SASRec trained on the **whole** training split of a dataset (method ``none``) is written as a
teacher folder of the artifacts contract for a **capped** dataset of the same source (its
top-100 items per training sequence; ``topk_dist`` = the row's best score minus the item's score,
>= 0, so that smaller is closer as with the LLM's distances; item embeddings = its item table).
Then every backbone is trained on the capped dataset with ``none`` and with DLLM2Rec (both
variants) for each seed, with the config's student settings; one CSV row per run.

    python scripts/control_teacher.py --full results/data/ml-100k-full --data results/data/ml-100k \
        --out results/control [--config config.yaml --configfile configs/evidence.yaml] [--seeds 0 1 2]

``--full``: a dataset built with ``sample: null`` (the data stage, ``python -m dllm2rec data``);
``--data``: the capped one whose training sequences the students see (its train rows must be a
subset of the full one's, as the data stage's seeded sampling gives). This is a check of the
distillation code on real data, not the paper's setting: the teacher is a sequential model, not
an LLM.
"""
from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dllm2rec import teacher_artifacts as ta  # noqa: E402
from dllm2rec.evaluate import metrics_from_ranks, target_rank  # noqa: E402
from dllm2rec.io import write_parquet  # noqa: E402
from dllm2rec.student.train import load_model, load_sequences, train_student  # noqa: E402

TOPN = 100


def write_control_teacher(model: Path, data: Path, out: Path) -> float:
    """The trained student ``model`` as a teacher folder for ``data``'s train rows; returns its HR@20
    on those rows."""
    student, table = load_model(model)
    n, _, splits = load_sequences(data)
    tr = splits["train"]
    with torch.no_grad():
        scores = student.scores(student.encode(tr.history, tr.lengths, table))
    top = scores.topk(TOPN, 1)
    best = scores.max(1, keepdim=True).values
    ranks = ta.ranks_table(tr.seq_id, {
        "generated": [""] * len(tr.seq_id), "topk_items": top.indices.numpy().astype(np.int32),
        "topk_dist": (best - top.values).numpy().astype(np.float32),
        "target_dist": (best[:, 0] - scores.gather(1, tr.target[:, None])[:, 0]).numpy().astype(np.float32)})
    write_parquet(ranks, ta.path(out, "ranks", "train"), metadata={"control_teacher": str(model)})
    emb = table[:n].numpy()
    write_parquet(ta.item_embeddings_table(np.arange(n), emb), ta.path(out, "item_embeddings"),
                  metadata=ta.embedding_metadata(emb.shape[1], control_teacher=str(model)))
    return metrics_from_ranks(target_rank(scores, tr.target))["HR@20"]


def load_config(files: list[str]) -> dict:
    """The config files merged in order (as Snakemake merges --configfile over config.yaml)."""
    def merge(a, b):
        for k, v in b.items():
            a[k] = merge(dict(a[k]), v) if isinstance(v, dict) and isinstance(a.get(k), dict) else v
        return a
    cfg: dict = {}
    for f in files:
        cfg = merge(cfg, yaml.safe_load(Path(f).read_text()))
    return cfg


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--full", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--config", nargs="+", default=["config.yaml"])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--backbones", nargs="+", default=["gru4rec", "sasrec", "dros"])
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    cfg = load_config(args.config)
    student = {k: v for k, v in cfg["student"].items() if k not in ("device",)}
    dllm2rec = {k: v for k, v in cfg["methods"]["dllm2rec"].items() if k != "search"}
    out = Path(args.out)
    t0 = time.time()
    teacher_run = out / "teacher_sasrec"
    if not (teacher_run / "model.pt").exists():
        train_student(args.full, "sasrec", "none", {"student": student, "method": {"type": "none"}}, 0,
                      str(teacher_run), str(out / "work" / "teacher_sasrec"), threads=args.threads)
    teacher = out / "teacher"
    hr = write_control_teacher(teacher_run / "model.pt", Path(args.data), teacher)
    full = json.loads((teacher_run / "metrics.json").read_text())
    print(f"control teacher: SASRec on the whole split, test HR@20 {full['test']['HR@20']:.4f}; HR@20 on the "
          f"capped dataset's train rows {hr:.4f} ({time.time() - t0:.0f}s)", flush=True)
    methods = {"none": {"type": "none"}, "dllm2rec": dllm2rec, "dllm2rec-official": {**dllm2rec, "variant": "official"}}
    rows = []
    for seed in args.seeds:
        for backbone in args.backbones:
            for name, method in methods.items():
                run = out / "students" / backbone / name / f"seed{seed}"
                t1 = time.time()
                m = train_student(args.data, backbone, method["type"], {"student": student, "method": method}, seed,
                                  str(run), str(out / "work" / backbone / name / str(seed)),
                                  teacher=None if name == "none" else str(teacher), threads=args.threads)
                rows.append({"backbone": backbone, "method": name, "seed": seed, "best_epoch": m["best_epoch"],
                             "epochs_run": m["epochs_run"], "valid_NDCG@20": m["valid"]["NDCG@20"],
                             "test_HR@20": m["test"]["HR@20"], "test_NDCG@20": m["test"]["NDCG@20"],
                             "seconds": round(time.time() - t1, 1)})
                print(json.dumps(rows[-1]), flush=True)
    with open(out / "control.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    print(f"wrote {out / 'control.csv'} ({time.time() - t0:.0f}s in all)")


if __name__ == "__main__":
    main()
