"""Resumable training: one checkpoint file per job, keyed by a fingerprint of what made it.

A job (student training, teacher SFT) saves its state after every epoch with
:func:`save_checkpoint`; a rerun calls :func:`load_checkpoint`, which returns the state only when
the fingerprint matches (same config, data and code inputs) and otherwise says why it starts over.
The checkpoint lives in the job's work folder, outside its declared outputs.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Callable

from dllm2rec.io import atomic_path
from dllm2rec.layout import CHECKPOINT


def fingerprint(*parts) -> str:
    """A short, stable hash of JSON-able ``parts`` (keys sorted, other objects as str)."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def checkpoint_path(work) -> Path:
    return Path(work) / CHECKPOINT


def save_checkpoint(work, fp: str, state: dict) -> None:
    """``state`` plus the fingerprint, atomically, to the work folder's checkpoint."""
    import torch

    with atomic_path(checkpoint_path(work)) as tmp:
        torch.save({"fingerprint": fp, **state}, tmp)


def load_checkpoint(work, fp: str, log: Callable[[str], None] = print) -> dict | None:
    """The saved state if the work folder holds a checkpoint made with fingerprint ``fp``."""
    import torch

    path = checkpoint_path(work)
    if not path.exists():
        return None
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    if ckpt.get("fingerprint") != fp:
        log(f"ignoring {path}: it was made by another configuration")
        return None
    return ckpt


def remove_checkpoint(work) -> None:
    checkpoint_path(work).unlink(missing_ok=True)
