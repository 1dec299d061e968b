"""The students' run outputs contract: what one training run writes and the tables read.

A run folder (``results/students/{dataset}/{teacher}/{backbone}/{method}/seed{seed}``, see
:mod:`dllm2rec.layout`) holds

* ``metrics.json``: the run's identity (:data:`IDENTITY`: dataset, teacher, backbone, method,
  params, seed), ``valid`` and ``test`` metrics at every K, ``best_epoch``, ``epochs_run``,
  ``train_seconds``, ``inference_seconds``, ``n_params``. Tables read a run's identity from
  here, never from the path;
* ``model.pt``: the selected student (``format`` :data:`MODEL_FORMAT`), loadable without the
  teacher by :func:`dllm2rec.student.train.load_model`;
* ``train_log.csv``: one row per epoch, columns :data:`LOG_FIELDS`;
* ``ranks.parquet``: per valid and test sequence the target's 1-based full-ranking rank (ties
  pessimistic, so HR@K = mean(rank <= K)) and the student's top-20 items (:data:`RANKS_SCHEMA`),
  with the run's identity in the file's metadata. Tables 2-3 and Table 5's significance test
  read it.
"""
from __future__ import annotations

import csv
import io
from pathlib import Path

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from dllm2rec.io import UserError, atomic_path, parquet_metadata, read_json, read_parquet, write_json, write_parquet
from dllm2rec.layout import RUN_FILES

IDENTITY = ("dataset", "teacher", "backbone", "method", "params", "seed")
LOG_FIELDS = ["epoch", "loss", "rec_loss", "distill_loss", "valid_HR@20", "valid_NDCG@20", "seconds", "valid_seconds"]
MODEL_FORMAT = "dllm2rec-student/1"
RANKS_SCHEMA = pa.schema([("split", pa.string()), ("seq_id", pa.int64()), ("target", pa.int64()),
                          ("rank", pa.int64()), ("topk", pa.list_(pa.int64()))])


def paths(folder) -> dict[str, Path]:
    """{"metrics": .., "model": .., "log_csv": ..} inside a run folder."""
    return {part: Path(folder) / name for part, name in RUN_FILES.items()}


def ranks_table(per_split: dict) -> pa.Table:
    """``per_split``: {split: (seq_ids, targets, 0-based ranks, top-k item lists)} -> the ranks table."""
    cols = {name: [] for name in RANKS_SCHEMA.names}
    for split, (seq_ids, targets, ranks, topk) in per_split.items():
        cols["split"] += [split] * len(seq_ids)
        cols["seq_id"] += np.asarray(seq_ids, dtype=np.int64).tolist()
        cols["target"] += np.asarray(targets, dtype=np.int64).tolist()
        cols["rank"] += (np.asarray(ranks, dtype=np.int64) + 1).tolist()
        cols["topk"] += [list(map(int, row)) for row in topk]
    return pa.table(cols, schema=RANKS_SCHEMA)


@dataclass
class RunRanks:
    """One split of a run's ranks.parquet, with the run's identity."""

    identity: dict
    seq_id: list[int]
    target: list[int]
    rank: list[int]  # 1-based
    topk: list[list[int]]


def read_ranks(path, split: str = "test") -> RunRanks:
    table = read_parquet(path, "student ranks", rule="student")
    identity = parquet_metadata(path).get("identity")
    missing = [c for c in RANKS_SCHEMA.names if c not in table.column_names]
    if missing or not identity:
        raise UserError(f"{path}: student ranks without {missing or ['the run identity']}; it was made by an older "
                        "version, rerun the student rule for it.")
    t = table.filter(pc.equal(table.column("split"), split))
    return RunRanks(identity, t.column("seq_id").to_pylist(), t.column("target").to_pylist(),
                    t.column("rank").to_pylist(), t.column("topk").to_pylist())


def read_log(path) -> list[dict]:
    """train_log.csv as a list of rows (numbers as floats, epoch as int)."""
    with open(path) as f:
        return [{k: (int(v) if k == "epoch" else float(v)) for k, v in row.items()} for row in csv.DictReader(f)]


def write_run(folder, metrics: dict, model: dict, log: list[dict], save_model, ranks: pa.Table | None = None) -> None:
    """Write the run's files, each atomically; ``metrics.json`` last (it marks the run done).
    ``save_model(obj, path)`` writes ``model.pt`` (torch.save; kept out of this module);
    ``ranks``: :func:`ranks_table`."""
    missing = [k for k in IDENTITY if k not in metrics]
    if missing:
        raise ValueError(f"student metrics lack the run identity {missing}")
    p = paths(folder)
    Path(folder).mkdir(parents=True, exist_ok=True)
    save_model(model, p["model"])
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=LOG_FIELDS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(log)
    with atomic_path(p["log_csv"]) as tmp:
        tmp.write_text(buf.getvalue())
    if ranks is not None:
        identity = {k: metrics[k] for k in IDENTITY}
        write_parquet(ranks, p["ranks"], metadata={"identity": identity, "rank": "1-based, ties pessimistic"})
    write_json(metrics, p["metrics"])


def read_metrics(path) -> dict:
    """A run's metrics.json, checked to carry its identity."""
    metrics = read_json(path)
    missing = [k for k in IDENTITY if k not in metrics]
    if missing or "test" not in metrics:
        raise UserError(f"{path}: student metrics without {missing or ['test']}; it was made by an older "
                        "version, rerun the student rule for it.")
    return metrics
