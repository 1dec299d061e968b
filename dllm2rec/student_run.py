"""The students' run outputs contract: what one training run writes and the tables read.

A run folder (``results/students/{dataset}/{teacher}/{backbone}/{method}/seed{seed}``, see
:mod:`dllm2rec.layout`) holds

* ``metrics.json``: the run's identity (:data:`IDENTITY`: dataset, teacher, backbone, method,
  params, seed), ``valid`` and ``test`` metrics at every K, ``best_epoch``, ``epochs_run``,
  ``train_seconds``, ``inference_seconds``, ``n_params``. Tables read a run's identity from
  here, never from the path;
* ``model.pt``: the selected student, written by :func:`write_model` and read by :func:`read_model`
  (:func:`load_student` builds the backbone from it, without the trainer or the teacher). It is a
  `safetensors <https://huggingface.co/docs/safetensors>`_ file, not a pickle, so reading one runs
  no code: the tensors ``student.<name>`` (the backbone's state dict), ``method.<name>`` (the
  method's) and ``item_table`` (the input item embeddings the backbone is fed), and in the
  header's metadata, under ``dllm2rec``, a JSON object :data:`MODEL_META` (``format``
  :data:`MODEL_FORMAT`, the dataset's name and fingerprint, backbone and options, method, ...).
  A model of the old pickled format (``dllm2rec-student/1``) is refused; :func:`convert_legacy_model`
  (``python -m dllm2rec convert-model --trusted FILE``) re-saves one the user trusts;
* ``train_log.csv``: one row per epoch, columns :data:`LOG_FIELDS`;
* ``ranks.parquet``: per valid and test sequence the target's full-ranking rank (ties
  pessimistic), **1-based in the file** (so HR@K = mean(rank <= K)) and 0-based in memory as
  everywhere else (:mod:`dllm2rec.evaluate`): :func:`ranks_table` adds the 1 and :func:`read_ranks`
  takes it off, the only two places that convert; and the student's top-20 items
  (:data:`RANKS_SCHEMA`), with the run's identity in the file's metadata. Tables 2-3 and Table 5's
  significance test read it.
"""
from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from dllm2rec.evaluate import HR, NDCG
from dllm2rec.io import UserError, atomic_path, parquet_metadata, read_json, read_parquet, write_json, write_parquet
from dllm2rec.layout import RUN_FILES

IDENTITY = ("dataset", "teacher", "backbone", "method", "params", "seed")
LOG_FIELDS = ["epoch", "loss", "rec_loss", "distill_loss", f"valid_{HR}", f"valid_{NDCG}", "seconds", "valid_seconds"]
MODEL_FORMAT = "dllm2rec-student/2"
LEGACY_MODEL_FORMAT = "dllm2rec-student/1"  # a torch.save pickle: refused, see convert_legacy_model
# the model's metadata (JSON, in the safetensors header): plain values only
MODEL_META = ("dataset", "dataset_fingerprint", "backbone", "backbone_options", "method", "method_type", "n_items",
              "max_len", "params", "seed", "best_epoch", "uses_teacher_at_inference")
MODEL_TENSORS = ("student", "method")  # state-dict prefixes; plus the tensor "item_table"
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
    rank: list[int]  # 0-based (the file's 1-based rank minus 1)
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
                    [r - 1 for r in t.column("rank").to_pylist()], t.column("topk").to_pylist())


def read_log(path) -> list[dict]:
    """train_log.csv as a list of rows (numbers as floats, epoch as int)."""
    with open(path) as f:
        return [{k: (int(v) if k == "epoch" else float(v)) for k, v in row.items()} for row in csv.DictReader(f)]


def write_run(folder, metrics: dict, model: dict, log: list[dict], ranks: pa.Table | None = None) -> None:
    """Write the run's files, each atomically; ``metrics.json`` last (it marks the run done).
    ``model``: the keyword arguments of :func:`write_model` (``meta``, ``student_state``,
    ``method_state``, ``item_table``); ``ranks``: :func:`ranks_table`."""
    missing = [k for k in IDENTITY if k not in metrics]
    if missing:
        raise ValueError(f"student metrics lack the run identity {missing}")
    p = paths(folder)
    Path(folder).mkdir(parents=True, exist_ok=True)
    write_model(p["model"], **model)
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


# --- model.pt: the selected student -----------------------------------------------------------
@dataclass
class StudentModel:
    """A student model file, read: its metadata (:data:`MODEL_META`) and tensors (on the CPU)."""

    path: Path
    meta: dict
    student_state: dict
    method_state: dict
    item_table: object  # torch.Tensor [n_items + 1, d]


def write_model(path, meta: dict, student_state: dict, method_state: dict, item_table) -> None:
    """Write a student model file atomically. ``meta``: plain JSON values, exactly the keys of
    :data:`MODEL_META`; ``student_state`` / ``method_state``: state dicts (tensors);
    ``item_table``: the tensor the backbone is fed as item embeddings."""
    import torch
    from safetensors.torch import save_file

    keys = set(meta)
    if keys != set(MODEL_META):
        raise ValueError(f"student model metadata: missing {sorted(set(MODEL_META) - keys)}, "
                         f"unknown {sorted(keys - set(MODEL_META))}")
    header = json.dumps({"format": MODEL_FORMAT, **meta}, sort_keys=True)  # raises on a value that is not plain
    tensors = {"item_table": item_table}
    for part, state in zip(MODEL_TENSORS, (student_state, method_state)):
        for name, value in state.items():
            if not isinstance(value, torch.Tensor):
                raise ValueError(f"student model: {part} state {name!r} is not a tensor ({type(value).__name__})")
            tensors[f"{part}.{name}"] = value
    # own, contiguous CPU copies: safetensors refuses tensors that share memory (a method may
    # hold the backbone's embedding, the item table may be it)
    tensors = {k: v.detach().to("cpu", copy=True).contiguous() for k, v in tensors.items()}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={"dllm2rec": header})


PICKLE_MAGIC = (b"PK\x03\x04", b"\x80")  # torch.save's zip archive, a bare pickle


def _legacy_refusal(path: Path) -> UserError:
    return UserError(
        f"{path}: a student model in the old pickled format ({LEGACY_MODEL_FORMAT}), which could run code when "
        f"loaded, so it is not read. Retrain it, or if you trust where the file comes from re-save it with "
        f"`python -m dllm2rec convert-model --trusted {path} --dataset NAME` (the dataset it was trained on).")


def read_model_meta(path) -> dict:
    """A student model file's metadata (:data:`MODEL_META` and ``format``), checked; no tensor is read."""
    return _open_model(Path(path))[0]


def _open_model(path: Path):
    if not path.exists():
        raise UserError(f"student model not found: {path}. Train it first (the student rule writes "
                        f"{RUN_FILES['model']}).")
    with open(path, "rb") as fh:
        head = fh.read(8)
    if head.startswith(PICKLE_MAGIC):
        raise _legacy_refusal(path)
    from safetensors import safe_open

    try:
        handle = safe_open(str(path), framework="pt", device="cpu")
        header = (handle.metadata() or {}).get("dllm2rec")
    except Exception as err:  # noqa: BLE001 - truncated or not a safetensors file: say which file
        raise UserError(f"{path}: cannot read it as a student model ({err.__class__.__name__}: "
                        f"{str(err).strip()[:200]}); it is truncated or not a model file, rerun the student's "
                        "training rule.") from None
    try:
        meta = json.loads(header) if header else {}
    except json.JSONDecodeError:
        meta = {}
    missing = [k for k in MODEL_META if k not in meta]
    if meta.get("format") != MODEL_FORMAT or missing:
        raise UserError(f"{path}: not a dllm2rec student model of format {MODEL_FORMAT} (format "
                        f"{meta.get('format')!r}{', without ' + ', '.join(missing) if missing else ''}); rerun the "
                        "student's training rule.")
    return meta, handle


def read_model(path) -> StudentModel:
    """A student model file: metadata and tensors (CPU). Refuses the old pickled format, a
    truncated file and anything else that is not a model file, naming the file."""
    path = Path(path)
    meta, handle = _open_model(path)
    parts = {part: {} for part in MODEL_TENSORS}
    table = None
    for key in handle.keys():
        part, _, name = key.partition(".")
        if key == "item_table":
            table = handle.get_tensor(key)
        elif part in parts and name:
            parts[part][name] = handle.get_tensor(key)
    if table is None:
        raise UserError(f"{path}: a student model without its item_table; rerun the student's training rule.")
    return StudentModel(path, meta, parts["student"], parts["method"], table)


def load_student(path, device: str = "cpu"):
    """``(student, item_table, meta)`` from a model file, in eval mode on ``device``:
    ``student.scores(student.encode(history, lengths, item_table))``. Builds the backbone from the
    recorded options alone (no trainer, no teacher)."""
    from dllm2rec.student.base import get_backbone

    m = read_model(path)
    meta = m.meta
    student = get_backbone(meta["backbone"])(int(meta["n_items"]), max_len=int(meta["max_len"]),
                                             **meta["backbone_options"])
    try:
        student.load_state_dict(m.student_state)
    except RuntimeError as err:
        raise UserError(f"{path}: its weights do not fit backbone {meta['backbone']!r} with "
                        f"{meta['backbone_options']} ({str(err).splitlines()[0]}); rerun the student's training "
                        "rule.") from None
    return student.to(device).eval(), m.item_table.to(device), meta


def convert_legacy_model(trusted, out=None, dataset=None) -> None:
    """``python -m dllm2rec convert-model --trusted FILE --dataset NAME [--out NEW]``: re-save
    a student model of the old pickled format (:data:`LEGACY_MODEL_FORMAT`) in the current one,
    ``out`` defaulting to ``FILE`` itself. Only for a file you trust: it is unpickled (with
    ``torch.load(weights_only=True)``, which admits tensors and plain containers only, as a second
    guard). ``dataset``: the name of the dataset it was trained on (the old format does not record
    it, and a name is never read from a path); its fingerprint is not known and is recorded as null."""
    import torch

    path = Path(trusted)
    out = Path(out) if out else path
    if not path.exists():
        raise UserError(f"convert-model: {path} not found")
    try:
        old = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - the restricted unpickler refused it, or not a torch file
        raise UserError(f"convert-model: {path} is not a student model of the old format that holds only tensors "
                        f"and plain values ({err.__class__.__name__}); it is not converted.") from None
    if not isinstance(old, dict) or old.get("format") != LEGACY_MODEL_FORMAT:
        raise UserError(f"convert-model: {path} is not a student model of format {LEGACY_MODEL_FORMAT}")
    if not dataset:
        raise UserError(f"convert-model: {path} does not record the dataset it was trained on: pass --dataset NAME")
    from dllm2rec.student.train import backbone_options  # the old file's params, read as its trainer did

    meta = {"dataset": dataset, "dataset_fingerprint": None, "backbone": old["backbone"],
            "backbone_options": backbone_options(old["params"], old["backbone"]),
            **{k: old[k] for k in ("method", "method_type", "n_items", "max_len", "params", "seed", "best_epoch",
                                   "uses_teacher_at_inference")}}
    write_model(out, meta, old["student_state"], old["method_state"], old["item_table"])
    print(f"converted {path} to {out} ({MODEL_FORMAT})")


def read_metrics(path) -> dict:
    """A run's metrics.json, checked to carry its identity."""
    metrics = read_json(path)
    missing = [k for k in IDENTITY if k not in metrics]
    if missing or "test" not in metrics:
        raise UserError(f"{path}: student metrics without {missing or ['test']}; it was made by an older "
                        "version, rerun the student rule for it.")
    return metrics
