"""The teacher's artifacts as tensors for the distillation methods: :func:`load_teacher`.

Files, columns and checks are the teacher artifacts contract (:mod:`dllm2rec.teacher_artifacts`,
docs/artifacts.md); this module only turns what it reads into :class:`TeacherTensors`, rows
joined to the student's sequence rows strictly by ``seq_id``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterable, Mapping

import numpy as np
import torch

from dllm2rec import teacher_artifacts as ta
from dllm2rec.distill.base import TeacherSplit, TeacherTensors
from dllm2rec.distill.spec import TEACHER_PARTS
from dllm2rec.layout import PER_ITEM_TEACHER_PARTS

PARTS = frozenset(TEACHER_PARTS)  # the teacher's own parts (teacher_artifacts.PARTS) and the text encoder's


def _items(teacher_dir: Path, part: str, n_items: int) -> torch.Tensor:
    """[n_items, d] of a per-item embeddings part (the teacher's or the text encoder's)."""
    return torch.from_numpy(ta.read_item_embeddings(ta.path(teacher_dir, part), n_items, teacher_dir))


def _generated(teacher_dir: Path, part: str, split: str, ids: np.ndarray) -> torch.Tensor:
    """[S, d] of a per-sequence embeddings part for the sequences ``ids`` of ``split``, in that order."""
    return torch.from_numpy(ta.read_generated_embeddings(ta.path(teacher_dir, part, split), ids, teacher_dir))


def _covered(teacher_dir: Path, parts: frozenset, split: str, ids: np.ndarray) -> np.ndarray | None:
    """bool [S]: the sequences of ``split`` the teacher generated for, None when all of them (or when
    no per-sequence part of the teacher's own is read)."""
    own = [p for p in ("ranks", "generated_embeddings") if p in parts]
    if not own:
        return None
    mask = ta.covered_mask(ta.path(teacher_dir, own[0], split), ids, teacher_dir)
    return None if mask is None or mask.all() else mask


def load_teacher(teacher_dir, sequences: Mapping[str, Iterable[int]], n_items: int,
                 parts: Iterable[str] = ta.PARTS, dataset_fingerprint: str | None = None) -> TeacherTensors:
    """Teacher tensors for ``sequences`` ({split: seq_id array in the student's row order}).
    ``dataset_fingerprint``: the student's dataset (:attr:`dllm2rec.dataset.Dataset.fingerprint`);
    a file made from another dataset is refused (:func:`~dllm2rec.teacher_artifacts.check_dataset`).

    ``parts`` ⊆ PARTS (default: the teacher's own three): only these files are read. The text
    encoder's parts (``text_item_embeddings``, ``text_generated_embeddings``, in the teacher's
    ``text_embeddings/`` folder) fill ``TeacherTensors.text_item_emb`` and ``TeacherSplit.text_gen_emb``;
    KAR's knowledge parts (``knowledge/``) ``TeacherTensors.knowledge_item_emb`` and
    ``TeacherSplit.knowledge_user_emb``.
    ``item_emb`` is an empty [0, 0] tensor when "item_embeddings" is not asked for; a split's
    ``topk_items``/``topk_dist``/``target_dist`` are empty [S, 0]/[S] tensors when "ranks" is not.

    Teacher coverage (docs/teacher.md): when the teacher's file of a split declares that it was
    generated for a subset of the split's sequences, the split's tensors hold only those rows, in
    the student's row order, and ``TeacherSplit.covered`` (bool [S] over the student's rows) says
    which; ``covered`` is None when every sequence is covered (then the tensors are exactly as
    without coverage).
    """
    teacher_dir = Path(teacher_dir)
    parts = frozenset(parts)
    unknown = parts - PARTS
    if unknown:
        raise ValueError(f"unknown teacher parts {sorted(unknown)}; known: {sorted(PARTS)}")
    for part in parts:
        for split in (sequences if part not in PER_ITEM_TEACHER_PARTS else [None]):
            ta.check_dataset(ta.path(teacher_dir, part, split), dataset_fingerprint, teacher_dir)
    item_emb = _items(teacher_dir, "item_embeddings", n_items) if "item_embeddings" in parts else torch.zeros(0, 0)
    text_item_emb = _items(teacher_dir, "text_item_embeddings", n_items) if "text_item_embeddings" in parts else None
    knowledge_item_emb = (_items(teacher_dir, "knowledge_item_embeddings", n_items)
                          if "knowledge_item_embeddings" in parts else None)
    splits = {}
    for split, ids in sequences.items():
        ids = np.asarray(ids, dtype=np.int64)
        covered = _covered(teacher_dir, parts, split, ids)
        if covered is not None:
            ids = ids[covered]
        if "ranks" in parts:
            items, dist, target = ta.read_ranks(ta.path(teacher_dir, "ranks", split), ids, n_items, teacher_dir)
            ts = TeacherSplit(torch.from_numpy(items), torch.from_numpy(dist), torch.from_numpy(target))
        else:
            ts = TeacherSplit(torch.zeros(len(ids), 0, dtype=torch.long), torch.zeros(len(ids), 0), torch.zeros(len(ids)))
        if "generated_embeddings" in parts:
            ts.gen_emb = _generated(teacher_dir, "generated_embeddings", split, ids)
        if "text_generated_embeddings" in parts:
            ts.text_gen_emb = _generated(teacher_dir, "text_generated_embeddings", split, ids)
        if "knowledge_user_embeddings" in parts:
            ts.knowledge_user_emb = _generated(teacher_dir, "knowledge_user_embeddings", split, ids)
        if covered is not None:
            ts.covered = torch.from_numpy(covered)
        splits[split] = ts
    return TeacherTensors(item_emb=item_emb, splits=splits, text_item_emb=text_item_emb,
                          knowledge_item_emb=knowledge_item_emb)
