"""Load the teacher's artifacts (ARCHITECTURE "artifact contract") as tensors joined to the
student's sequence rows strictly by ``seq_id``.

Every mismatch is a :class:`~dllm2rec.io.UserError` naming the file and the fix: a sequence the
teacher file does not cover, a seq_id it lists twice or that the split does not have, ranked lists
of unequal length, item ids outside 0..n-1, an item-embedding table whose rows are not exactly
items 0..n-1. These mean the teacher was made for another dataset (or another sampling of it).
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterable, Mapping

import numpy as np
import pyarrow as pa
import torch

from dllm2rec.distill.base import TeacherSplit, TeacherTensors
from dllm2rec.distill.spec import TEACHER_PARTS, part_files
from dllm2rec.io import UserError, read_parquet

PARTS = frozenset(TEACHER_PARTS)


def _fix(teacher_dir: Path) -> str:
    return (f"The teacher at {teacher_dir} does not match this dataset's sequences: rerun the teacher "
            "(ranks / embeddings) for this dataset and its sampling, or point to the right teacher.")


def _column(table: pa.Table, name: str, path: Path, teacher_dir: Path) -> pa.Array:
    if name not in table.column_names:
        raise UserError(f"{path}: missing column {name!r} (has {table.column_names}). {_fix(teacher_dir)}")
    return table.column(name).combine_chunks()


def _list_matrix(arr: pa.Array, path: Path, name: str, teacher_dir: Path, dtype) -> np.ndarray:
    """list<T> or fixed_size_list<T> column -> [rows, N] numpy array (every list the same length)."""
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    rows = len(arr)
    if arr.null_count:
        raise UserError(f"{path}: column {name!r} has null rows. {_fix(teacher_dir)}")
    if pa.types.is_fixed_size_list(arr.type):
        width = arr.type.list_size
        values = arr.flatten()
    elif pa.types.is_list(arr.type) or pa.types.is_large_list(arr.type):
        offsets = np.asarray(arr.offsets)
        sizes = np.diff(offsets)
        width = int(sizes[0]) if rows else 0
        if rows and not (sizes == width).all():
            bad = int(np.flatnonzero(sizes != width)[0])
            raise UserError(f"{path}: column {name!r} has lists of unequal length (row {bad} has {sizes[bad]}, "
                            f"row 0 has {width}). {_fix(teacher_dir)}")
        values = arr.flatten()
    else:
        raise UserError(f"{path}: column {name!r} is {arr.type}, expected a list. {_fix(teacher_dir)}")
    if values.null_count:
        raise UserError(f"{path}: column {name!r} has null values. {_fix(teacher_dir)}")
    return values.to_numpy(zero_copy_only=False).astype(dtype, copy=False).reshape(rows, width)


def _join(seq_ids: np.ndarray, teacher_ids: np.ndarray, path: Path, teacher_dir: Path) -> np.ndarray:
    """Row of ``teacher_ids`` for each of ``seq_ids``, or a UserError if the sets differ."""
    order = np.argsort(teacher_ids, kind="stable")
    sorted_ids = teacher_ids[order]
    dup = sorted_ids[1:] == sorted_ids[:-1]
    if dup.any():
        raise UserError(f"{path}: seq_id {int(sorted_ids[1:][dup][0])} appears more than once. {_fix(teacher_dir)}")
    pos = np.searchsorted(sorted_ids, seq_ids)
    pos_c = np.minimum(pos, max(len(sorted_ids) - 1, 0))
    found = (pos < len(sorted_ids)) & (sorted_ids[pos_c] == seq_ids) if len(sorted_ids) else np.zeros(len(seq_ids), bool)
    if not found.all():
        missing = seq_ids[~found]
        raise UserError(f"{path}: {len(missing)} of the split's {len(seq_ids)} sequences are missing "
                        f"(e.g. seq_id {int(missing[0])}). {_fix(teacher_dir)}")
    if len(teacher_ids) != len(seq_ids):
        extra = np.setdiff1d(teacher_ids, seq_ids)
        raise UserError(f"{path}: {len(extra)} seq_id(s) that the split does not have (e.g. {int(extra[0])}). "
                        f"{_fix(teacher_dir)}")
    return order[pos_c]


def _read_ranks(path: Path, seq_ids: np.ndarray, n_items: int, teacher_dir: Path) -> TeacherSplit:
    table = read_parquet(path, "teacher ranks")
    rows = _join(seq_ids.astype(np.int64), _column(table, "seq_id", path, teacher_dir).to_numpy().astype(np.int64), path, teacher_dir)
    items = _list_matrix(_column(table, "topk_items", path, teacher_dir), path, "topk_items", teacher_dir, np.int64)[rows]
    dist = _list_matrix(_column(table, "topk_dist", path, teacher_dir), path, "topk_dist", teacher_dir, np.float32)[rows]
    if items.shape != dist.shape:
        raise UserError(f"{path}: topk_items has {items.shape[1]} entries per row but topk_dist {dist.shape[1]}. {_fix(teacher_dir)}")
    if items.size and (items.min() < 0 or items.max() > n_items - 1):
        bad = int(items.max()) if items.max() > n_items - 1 else int(items.min())
        raise UserError(f"{path}: item id {bad} is outside 0..{n_items - 1} (this dataset has {n_items} items). "
                        f"{_fix(teacher_dir)}")
    target = _column(table, "target_dist", path, teacher_dir).to_numpy(zero_copy_only=False).astype(np.float32)[rows]
    return TeacherSplit(torch.from_numpy(np.ascontiguousarray(items)), torch.from_numpy(np.ascontiguousarray(dist)),
                        torch.from_numpy(np.ascontiguousarray(target)))


def _read_gen(path: Path, seq_ids: np.ndarray, teacher_dir: Path) -> torch.Tensor:
    table = read_parquet(path, "teacher generated embeddings")
    rows = _join(seq_ids.astype(np.int64), _column(table, "seq_id", path, teacher_dir).to_numpy().astype(np.int64), path, teacher_dir)
    emb = _list_matrix(_column(table, "embedding", path, teacher_dir), path, "embedding", teacher_dir, np.float32)[rows]
    return torch.from_numpy(np.ascontiguousarray(emb))


def _read_items(path: Path, n_items: int, teacher_dir: Path) -> torch.Tensor:
    table = read_parquet(path, "teacher item embeddings")
    ids = _column(table, "item_id", path, teacher_dir).to_numpy().astype(np.int64)
    if len(ids) != n_items or not np.array_equal(np.sort(ids), np.arange(n_items)):
        raise UserError(f"{path}: has {len(ids)} rows with item ids {ids.min() if len(ids) else '-'}.."
                        f"{ids.max() if len(ids) else '-'}, expected exactly items 0..{n_items - 1} once each. "
                        f"{_fix(teacher_dir)}")
    emb = _list_matrix(_column(table, "embedding", path, teacher_dir), path, "embedding", teacher_dir, np.float32)
    out = np.empty_like(emb)
    out[ids] = emb
    if not np.isfinite(out).all():
        raise UserError(f"{path}: embeddings contain NaN or inf. {_fix(teacher_dir)}")
    return torch.from_numpy(out)


def load_teacher(teacher_dir, sequences: Mapping[str, Iterable[int]], n_items: int,
                 parts: Iterable[str] = ("ranks", "item_embeddings", "generated_embeddings")) -> TeacherTensors:
    """Teacher tensors for ``sequences`` ({split: seq_id array in the student's row order}).

    ``parts`` ⊆ PARTS (default: the teacher's own three): only these files are read. The text
    encoder's parts (``text_item_embeddings``, ``text_generated_embeddings``, in the teacher's
    ``text_embeddings/`` folder) fill ``TeacherTensors.text_item_emb`` and ``TeacherSplit.text_gen_emb``.
    ``item_emb`` is an empty [0, 0] tensor when "item_embeddings" is not asked for; a split's
    ``topk_items``/``topk_dist``/``target_dist`` are empty [S, 0]/[S] tensors when "ranks" is not.
    """
    teacher_dir = Path(teacher_dir)
    parts = frozenset(parts)
    unknown = parts - PARTS
    if unknown:
        raise ValueError(f"unknown teacher parts {sorted(unknown)}; known: {sorted(PARTS)}")
    item_emb = _read_items(teacher_dir / "item_embeddings.parquet", n_items, teacher_dir) \
        if "item_embeddings" in parts else torch.zeros(0, 0)
    text_item_emb = None
    if "text_item_embeddings" in parts:
        text_item_emb = _read_items(teacher_dir / part_files("text_item_embeddings", [])[0], n_items, teacher_dir)
    splits = {}
    for split, ids in sequences.items():
        ids = np.asarray(ids, dtype=np.int64)
        if "ranks" in parts:
            ts = _read_ranks(teacher_dir / "ranks" / f"{split}.parquet", ids, n_items, teacher_dir)
        else:
            ts = TeacherSplit(torch.zeros(len(ids), 0, dtype=torch.long), torch.zeros(len(ids), 0), torch.zeros(len(ids)))
        if "generated_embeddings" in parts:
            ts.gen_emb = _read_gen(teacher_dir / "generated_embeddings" / f"{split}.parquet", ids, teacher_dir)
        if "text_generated_embeddings" in parts:
            ts.text_gen_emb = _read_gen(teacher_dir / part_files("text_generated_embeddings", [split])[0], ids, teacher_dir)
        splits[split] = ts
    return TeacherTensors(item_emb=item_emb, splits=splits, text_item_emb=text_item_emb)
