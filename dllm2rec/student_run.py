"""The students' run outputs contract: what one training run writes and the tables read.

A run folder (``results/students/{dataset}/{teacher}/{backbone}/{method}/seed{seed}``, see
:mod:`dllm2rec.layout`) holds

* ``metrics.json``: the run's identity (:data:`IDENTITY`: dataset, teacher, backbone, method,
  params, seed), ``valid`` and ``test`` metrics at every K, ``best_epoch``, ``epochs_run``,
  ``train_seconds``, ``inference_seconds``, ``n_params``. Tables read a run's identity from
  here, never from the path;
* ``model.pt``: the selected student (``format`` :data:`MODEL_FORMAT`), loadable without the
  teacher by :func:`dllm2rec.student.train.load_model`;
* ``train_log.csv``: one row per epoch, columns :data:`LOG_FIELDS`.
"""
from __future__ import annotations

import csv
import io
from pathlib import Path

from dllm2rec.io import UserError, atomic_path, read_json, write_json
from dllm2rec.layout import RUN_FILES

IDENTITY = ("dataset", "teacher", "backbone", "method", "params", "seed")
LOG_FIELDS = ["epoch", "loss", "rec_loss", "distill_loss", "valid_HR@20", "valid_NDCG@20", "seconds", "valid_seconds"]
MODEL_FORMAT = "dllm2rec-student/1"


def paths(folder) -> dict[str, Path]:
    """{"metrics": .., "model": .., "log_csv": ..} inside a run folder."""
    return {part: Path(folder) / name for part, name in RUN_FILES.items()}


def write_run(folder, metrics: dict, model: dict, log: list[dict], save_model) -> None:
    """Write the run's three files, each atomically; ``metrics.json`` last (it marks the run done).
    ``save_model(obj, path)`` writes ``model.pt`` (torch.save; kept out of this module)."""
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
    write_json(metrics, p["metrics"])


def read_metrics(path) -> dict:
    """A run's metrics.json, checked to carry its identity."""
    metrics = read_json(path)
    missing = [k for k in IDENTITY if k not in metrics]
    if missing or "test" not in metrics:
        raise UserError(f"{path}: student metrics without {missing or ['test']}; it was made by an older "
                        "version, rerun the student rule for it.")
    return metrics
