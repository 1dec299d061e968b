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

PARTS = ta.PARTS


def load_teacher(teacher_dir, sequences: Mapping[str, Iterable[int]], n_items: int,
                 parts: Iterable[str] = PARTS) -> TeacherTensors:
    """Teacher tensors for ``sequences`` ({split: seq_id array in the student's row order}).

    ``parts`` ⊆ {"ranks", "item_embeddings", "generated_embeddings"}: only these files are read.
    ``item_emb`` is an empty [0, 0] tensor when "item_embeddings" is not asked for; a split's
    ``topk_items``/``topk_dist``/``target_dist`` are empty [S, 0]/[S] tensors when "ranks" is not.
    """
    teacher_dir = Path(teacher_dir)
    parts = frozenset(parts)
    unknown = parts - PARTS
    if unknown:
        raise ValueError(f"unknown teacher parts {sorted(unknown)}; known: {sorted(PARTS)}")
    item_emb = torch.from_numpy(ta.read_item_embeddings(ta.path(teacher_dir, "item_embeddings"), n_items, teacher_dir)) \
        if "item_embeddings" in parts else torch.zeros(0, 0)
    splits = {}
    for split, ids in sequences.items():
        ids = np.asarray(ids, dtype=np.int64)
        if "ranks" in parts:
            items, dist, target = ta.read_ranks(ta.path(teacher_dir, "ranks", split), ids, n_items, teacher_dir)
            ts = TeacherSplit(torch.from_numpy(items), torch.from_numpy(dist), torch.from_numpy(target))
        else:
            ts = TeacherSplit(torch.zeros(len(ids), 0, dtype=torch.long), torch.zeros(len(ids), 0), torch.zeros(len(ids)))
        if "generated_embeddings" in parts:
            ts.gen_emb = torch.from_numpy(ta.read_generated_embeddings(ta.path(teacher_dir, "generated_embeddings", split),
                                                                       ids, teacher_dir))
        splits[split] = ts
    return TeacherTensors(item_emb=item_emb, splits=splits)
