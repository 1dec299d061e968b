"""Teacher files in the released DLLM2Rec code's format, both directions.

The released code (istarryn/DLLM2Rec ``main.py``) reads a teacher from three files in
``./tocf/<data>/``:

* ``myrank_train.txt``: ``np.loadtxt`` -> ``torch.LongTensor`` ``[train rows, K]``: row i holds
  the teacher's top-K item ids (best first) for row i of ``train_data.df`` (it indexes the
  matrix with the row labels of ``train_data.sample(...)``, i.e. the frame's 0..N-1 index);
* ``confidence_train.txt``: ``np.loadtxt`` -> float ``[train rows, K]``: the plain L2 distance
  of each candidate (``torch.cdist(p=2)`` in BIGRec's evaluate.py), used as ``exp(-d)``;
* ``all_embeddings.pt``: ``torch.load`` -> a float tensor ``[n_items, d]``, row i = item i's
  LLM embedding (looked up as ``llm_all_emb[seq[mask]]`` for ids below its row count; the
  padding id ``n_items`` is masked out).

Row order: the train rows of ``train_data.df`` as ``python -m dllm2rec export-official`` writes
it, i.e. the dataset's train split in ``seq_id`` order; item ids are ours (0..n-1), the ids of
that export. :func:`export_teacher` writes a teacher folder of ours in that format (and, as
extensions the released code does not read, ``myrank_{valid,test}.txt``,
``confidence_{valid,test}.txt`` and ``target_{split}.txt``, the distance to the target that the
paper-variant confidence reads). Our teacher folders keep *squared* L2 distances
(docs/teacher.md), so the export takes their square root and the import squares them back.

:func:`import_ranks` and :func:`import_item_embeddings` (``teachers.<name>.type: files``) read
such files back into our artifacts, checked like every other input: row count against the
split, ids in range and integral, rank and confidence of one width, NaN/inf, and the embeddings
loaded with ``torch.load(weights_only=True)``, which refuses to run pickled code. Each problem is
a :class:`~dllm2rec.io.UserError` naming the file and the fix.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from dllm2rec import dataset as ds
from dllm2rec import teacher_artifacts as ta
from dllm2rec.io import UserError, atomic_path, write_parquet

SPLITS = ("train", "valid", "test")
RANK = "myrank_{split}.txt"
CONFIDENCE = "confidence_{split}.txt"
TARGET = "target_{split}.txt"  # ours: each row's distance to its target (the released code has none)
EMBEDDINGS = "all_embeddings.pt"


def released_file(folder, kind: str, split: str = "train") -> Path:
    """The file ``kind`` (``rank``, ``confidence``, ``target``, ``embeddings``) in a released-format folder."""
    names = {"rank": RANK, "confidence": CONFIDENCE, "target": TARGET, "embeddings": EMBEDDINGS}
    return Path(folder) / names[kind].format(split=split)


# ------------------------------------------------------------------------------------------ export
def export_teacher(teacher: str, data: str, out: str) -> None:
    """Write the teacher folder ``teacher`` (made for the dataset ``data``) as released-format
    files in the folder ``out``: every split the teacher has ranks for, and its item embeddings."""
    import torch

    dataset = ds.load_dataset(data)
    n = dataset.n_items
    if not ta.path(teacher, "ranks", "train").exists():
        raise UserError(f"{ta.path(teacher, 'ranks', 'train')} not found: a teacher folder needs its train ranks "
                        "to be exported (run the teacher first).")
    emb = ta.read_item_embeddings(ta.path(teacher, "item_embeddings"), n, Path(teacher))
    with atomic_path(out, is_dir=True) as tmp:
        tmp.mkdir(parents=True, exist_ok=True)
        written = []
        for split in SPLITS:
            ranks = ta.path(teacher, "ranks", split)
            if not ranks.exists():
                continue
            ids = ds.seq_ids(dataset.split(split, by_seq_id=True))
            items, dist, target = ta.read_ranks(ranks, ids, n, Path(teacher))
            np.savetxt(released_file(tmp, "rank", split), items, fmt="%d")
            np.savetxt(released_file(tmp, "confidence", split), np.sqrt(np.maximum(dist, 0)), fmt="%.9g")
            np.savetxt(released_file(tmp, "target", split), np.sqrt(np.maximum(target, 0)), fmt="%.9g")
            written.append(f"{split} ({len(ids)} rows x {items.shape[1]})")
        torch.save(torch.from_numpy(np.ascontiguousarray(emb, dtype=np.float32)), released_file(tmp, "embeddings"))
    print(f"wrote {out}: ranks of {', '.join(written)}; {EMBEDDINGS} [{n}, {emb.shape[1]}]")


# ------------------------------------------------------------------------------------------ import
def _read(path, what: str, key: str, load, errors: tuple, refused):
    """``load(path)`` of a teacher file, or a UserError: the file is missing (``key``: the
    config key to point to it), or ``load`` raised one of ``errors`` (``refused(err)``: why, and
    how to write the file)."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"teacher file not found: {path} ({what}). Point {key} to it.")
    try:
        return load(path)
    except errors as err:
        raise UserError(f"{path}: {refused(err)}") from None


def _matrix(path, what: str) -> np.ndarray:
    return _read(path, what, "teachers.<name>.files", lambda p: np.loadtxt(p, dtype=np.float64, ndmin=2),
                 (ValueError,), lambda err: f"not a whitespace-separated table of numbers ({what}): {err}. Write it "
                                            "with np.savetxt (python -m dllm2rec export-teacher does).")


def _check_rows(m: np.ndarray, path, split: str, n_rows: int) -> None:
    if m.shape[0] != n_rows:
        raise UserError(f"{path}: has {m.shape[0]} rows, but the dataset's {split} split has {n_rows}: row i must be "
                        f"the i-th {split} sequence in seq_id order (the row order of export-official's files). "
                        "The file was made for another dataset or sampling.")


def _check_finite(m: np.ndarray, path, what: str) -> None:
    bad = ~np.isfinite(m)
    if bad.any():
        row = int(np.flatnonzero(bad.reshape(len(m), -1).any(axis=1))[0])
        raise UserError(f"{path}: {int(bad.sum())} NaN/inf value(s) in the {what} (first in row {row}). "
                        "Fix the teacher run that wrote it.")


def read_ranks_files(rank, confidence, split: str, n_rows: int, n_items: int, target=None):
    """``(topk_items int32 [S, K], topk_dist float32 [S, K] squared, target_dist float32 [S] or
    None)`` from released-format files, every check applied."""
    items = _matrix(rank, "top-K item ids")
    _check_rows(items, rank, split, n_rows)
    _check_finite(items, rank, "item ids")
    if items.size and (items != np.round(items)).any():
        row = int(np.flatnonzero((items != np.round(items)).any(axis=1))[0])
        raise UserError(f"{rank}: row {row} holds an item id that is not an integer; this is not a rank file "
                        "(is it the confidence file?).")
    if items.size and (items.min() < 0 or items.max() > n_items - 1):
        bad = int(items.max()) if items.max() > n_items - 1 else int(items.min())
        raise UserError(f"{rank}: item id {bad} is outside 0..{n_items - 1} (the dataset has {n_items} items): the "
                        "file was made for another dataset, or with other item ids than export-official's.")
    conf = _matrix(confidence, "candidate distances")
    _check_rows(conf, confidence, split, n_rows)
    if conf.shape[1] != items.shape[1]:
        raise UserError(f"{confidence}: {conf.shape[1]} distances per row, but {rank} has {items.shape[1]} items per "
                        "row: the two files must have the same width (one distance per candidate).")
    _check_finite(conf, confidence, "distances")
    tgt = None
    if target is not None:
        tgt = _matrix(target, "distances to the target")
        _check_rows(tgt, target, split, n_rows)
        if tgt.shape[1] != 1:
            raise UserError(f"{target}: {tgt.shape[1]} values per row; expected one (the distance to the target).")
        _check_finite(tgt, target, "distances to the target")
        tgt = (tgt[:, 0] ** 2).astype(np.float32)
    return items.astype(np.int32), (conf ** 2).astype(np.float32), tgt


def import_ranks(data: str, split: str, rank: str, confidence: str, out: str, target: str | None = None) -> None:
    """Released-format ranks of ``split`` -> ``ranks/{split}.parquet`` of our contract (``out``).
    Without ``target`` the target distances are 0 and the metadata says ``target_dist: absent``
    (the workflow refuses DLLM2Rec's paper-variant confidence then)."""
    dataset = ds.load_dataset(data)
    rows = dataset.split(split, by_seq_id=True)
    ids = ds.seq_ids(rows)
    items, dist, tgt = read_ranks_files(rank, confidence, split, len(ids), dataset.n_items,
                                        None if target in (None, "", "None") else target)
    table = ta.ranks_table(ids, {"generated": [""] * len(ids), "topk_items": items, "topk_dist": dist,
                                 "target_dist": np.zeros(len(ids), np.float32) if tgt is None else tgt})
    write_parquet(table, out, metadata={"split": split, "n_sequences": len(ids), "imported_from": str(rank),
                                        "target_dist": "absent" if tgt is None else str(target),
                                        "inference_seconds": None, "dataset": dataset.name,
                                        "dataset_fingerprint": dataset.fingerprint})
    print(f"{split}: {len(ids)} rows x {items.shape[1]} candidates from {rank}")


def load_embeddings(path, n_items: int) -> np.ndarray:
    """float32 ``[n_items, d]`` from an ``all_embeddings.pt`` (a tensor, never pickled code)."""
    import pickle

    import torch

    def refused(err) -> str:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        return (f"not a plain tensor file; torch.load(weights_only=True), which runs no pickled code, refused it "
                f"({first}). Save the embeddings with torch.save(tensor, path).")

    path = Path(path)
    obj = _read(path, "item embeddings", "teachers.<name>.files.embeddings",
                lambda p: torch.load(p, map_location="cpu", weights_only=True),
                (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, AttributeError, TypeError), refused)
    if not isinstance(obj, torch.Tensor) or obj.dim() != 2:
        shape = tuple(obj.shape) if isinstance(obj, torch.Tensor) else type(obj).__name__
        raise UserError(f"{path}: holds {shape}, expected one 2-D tensor [n_items, d].")
    if obj.shape[0] != n_items:
        raise UserError(f"{path}: has {obj.shape[0]} rows, but the dataset has {n_items} items: row i must be item "
                        "i's embedding. The file was made for another dataset.")
    emb = obj.detach().to(torch.float32).numpy()
    _check_finite(emb, path, "embeddings")
    return emb


def import_item_embeddings(data: str, embeddings: str, out: str) -> None:
    """An ``all_embeddings.pt`` -> ``item_embeddings.parquet`` of our contract (``out``)."""
    dataset = ds.load_dataset(data)
    emb = load_embeddings(embeddings, dataset.n_items)
    write_parquet(ta.item_embeddings_table(np.arange(len(emb)), emb), out,
                  metadata=ta.embedding_metadata(emb.shape[1], imported_from=str(embeddings), dataset=dataset.name,
                                                 dataset_fingerprint=dataset.fingerprint))
    print(f"item embeddings [{emb.shape[0]}, {emb.shape[1]}] from {embeddings}")
