"""A recommender teacher (``teachers.<name>.type: recommender``): a backbone of this package,
trained without distillation, written as a teacher folder of the artifacts contract.

The backbone (``recommender.backbone``) is trained with method ``none`` by
:func:`dllm2rec.student.train.train_student` on ``train_data``: by default the dataset built
again without ``sample`` (``recommender.train_split: whole``, every training sequence of the
source), or the students' own dataset (``sampled``). It selects its epoch on that data's valid
split, as every student does. Then it ranks every sequence of the students' dataset (``data``):

* ``ranks/{split}.parquet`` for train, valid and test: its top-N items (``grounding.topn``) per
  sequence, ``topk_dist`` = the row's best score minus the item's score (>= 0, ascending, so
  that smaller is closer as with the LLM's distances), ``target_dist`` the same for the target,
  ``generated`` empty (no text);
* ``item_embeddings.parquet``: its item table (``[n_items, hidden]``), the ``z_i`` that
  embedding distillation reads;
* ``recommender/``: the training run itself (model.pt, metrics.json, train_log.csv).

The teacher's metrics.json is written from ``ranks/test.parquet`` by the same rule as any
teacher's (:func:`dllm2rec.teacher.metrics.teacher_metrics`). This is the control of
docs/results.md (a teacher that knows more than the students: it saw every training sequence),
formerly ``scripts/control_teacher.py``.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch

from dllm2rec import dataset as ds
from dllm2rec import layout
from dllm2rec import teacher_artifacts as ta
from dllm2rec.evaluate import HR
from dllm2rec.io import UserError, write_parquet
from dllm2rec.settings import GroundingSettings, StudentSettings

SPLITS = ("train", "valid", "test")
TOPN = GroundingSettings.topn


def teacher_rows(model, data, topn: int = TOPN, batch_size: int = StudentSettings.eval_batch_size) -> dict:
    """{split: (ranks table, seconds)}: the trained run ``model`` (a model.pt) ranking every
    sequence of the dataset folder ``data``; and ``"item_table"``: its item table [n, hidden]."""
    from dllm2rec.student.train import load_sequences
    from dllm2rec.student_run import load_student

    student, table, _ = load_student(model)
    n, _, splits = load_sequences(data)
    if table.shape[0] < n:
        raise UserError(f"{model} was trained on {table.shape[0]} items, but {data} has {n}: train the recommender "
                        "teacher on the same source as the students' dataset.")
    out = {"item_table": table[:n].numpy().astype(np.float32)}
    topn = min(int(topn), n)
    for split in SPLITS:
        d = splits[split]
        t0 = time.perf_counter()
        items, dist, target = [], [], []
        with torch.no_grad():
            for start in range(0, len(d.target), batch_size):
                sl = slice(start, start + batch_size)
                scores = student.scores(student.encode(d.history[sl], d.lengths[sl], table))[:, :n].float()
                top = scores.topk(topn, 1)
                best = top.values[:, :1]
                items.append(top.indices.to(torch.int32))
                dist.append(best - top.values)
                target.append(best[:, 0] - scores.gather(1, d.target[sl, None].long())[:, 0])
        cat = (lambda xs, shape: torch.cat(xs).numpy() if xs else np.zeros(shape, np.float32))
        ranks = ta.ranks_table(d.seq_id, {"generated": [""] * len(d.seq_id),
                                          "topk_items": cat(items, (0, topn)).astype(np.int32),
                                          "topk_dist": cat(dist, (0, topn)).astype(np.float32),
                                          "target_dist": cat(target, (0,)).astype(np.float32)})
        out[split] = (ranks, time.perf_counter() - t0)
    return out


def write_teacher(model, data, out, topn: int = TOPN, **meta) -> None:
    """The trained run ``model`` as a teacher folder ``out`` for the dataset ``data``; ``meta`` is
    recorded in every file's metadata."""
    rows = teacher_rows(model, data, topn)
    dataset = ds.load_dataset(data)  # the files record which dataset they rank (students check it)
    meta = {**meta, "dataset": dataset.name, "dataset_fingerprint": dataset.fingerprint}
    emb = rows["item_table"]
    write_parquet(ta.item_embeddings_table(np.arange(len(emb)), emb), ta.path(out, "item_embeddings"),
                  metadata=ta.embedding_metadata(emb.shape[1], **meta))
    for split in SPLITS:
        ranks, seconds = rows[split]
        write_parquet(ranks, ta.path(out, "ranks", split),
                      metadata={**meta, "split": split, "inference_seconds": seconds, "n_sequences": ranks.num_rows})


def _same_items(data, train_data) -> None:
    a, b = ds.load_dataset(data), ds.load_dataset(train_data)
    if ds.raw_ids(a.items) != ds.raw_ids(b.items):
        raise UserError(f"the recommender teacher's training data {train_data} and the students' dataset {data} "
                        "have different item tables: both must come from the same source and settings "
                        "(only `sample` may differ).")


def recommender_teacher(data: str, train_data: str, backbone: str, params, seed, out: str, work: str,
                        topn=TOPN, label: str | None = None, threads=None, device: str = "auto") -> None:
    """Train ``backbone`` with method ``none`` on ``train_data`` (``params``: the trainer's
    ``{"student": ...}``), then write the teacher folder ``out`` for the dataset ``data``."""
    from dllm2rec.student.train import train_student

    if isinstance(params, str):
        params = json.loads(params)
    _same_items(data, train_data)
    run = Path(out) / layout.RECOMMENDER_RUN
    metrics = train_student(str(train_data), backbone, "none", {**params, "method": {"type": "none"}}, int(seed),
                            str(run), str(work), threads=threads, device=device)
    write_teacher(run / layout.RUN_FILES["model"], data, out, int(topn), recommender=backbone,
                  train_data=str(train_data), label=label, seed=int(seed))
    print(f"recommender teacher {label or backbone}: test {HR} {metrics['test'][HR]:.4f} on its own "
          f"training data ({train_data}); teacher folder {out}", flush=True)
