"""Resumable training: one checkpoint file per job, keyed by a fingerprint of what made it.

A job (student training, teacher SFT) saves its state after every epoch with
:func:`save_checkpoint`; a rerun calls :func:`load_checkpoint`, which returns the state only when
the fingerprint matches (same config, data and code inputs) and otherwise says why it starts over.
It is read with ``torch.load(weights_only=True)``: tensors and plain values only, so a checkpoint
cannot run code; an unreadable one (truncated) is named and ignored.
The checkpoint lives in the job's work folder, outside its declared outputs.

:func:`job_fingerprint` is what a job keys its checkpoint by: its config, the *content* of its
input files (not their paths: a dataset rebuilt with another sample seed at the same path is
another input; files over 32 MiB by size and modification time) and the source of the ``dllm2rec`` package (edited code never resumes a state
that older code made). A job deletes its checkpoint when it finishes, so a finished job leaves
nothing that a later run could resume.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import signal
import threading
import time
from pathlib import Path
from typing import Callable

from dllm2rec.io import atomic_path, progress, sha256
from dllm2rec.layout import CHECKPOINT


def fingerprint(*parts) -> str:
    """A short, stable hash of JSON-able ``parts`` (keys sorted, other objects as str)."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


PACKAGE = Path(__file__).resolve().parent


BIG_FILE = 32 << 20  # files above this are keyed by size and modification time, not hashed


def _file_digest(path: Path) -> str:
    """sha256 of a file's content; a big one (a 7B teacher's embeddings run to GBs, and every
    student job would hash them) by its size and modification time instead: a regenerated file
    gets a new one."""
    stat = path.stat()
    if stat.st_size > BIG_FILE:
        return f"size={stat.st_size},mtime_ns={stat.st_mtime_ns}"
    return sha256(path)


def content_digest(path) -> str | None:
    """A digest of a file, or of every file under a folder (relative names and contents, sorted;
    hidden names such as atomic writes' temporaries skipped); None for a path that does not exist."""
    path = Path(path)
    if path.is_file():
        return _file_digest(path)
    if not path.is_dir():
        return None
    h = hashlib.sha256()
    for f in sorted(p for p in path.rglob("*") if p.is_file()):
        rel = f.relative_to(path)
        if any(part.startswith(".") for part in rel.parts):
            continue
        h.update(f"{rel.as_posix()}\0{_file_digest(f)}\n".encode())
    return h.hexdigest()


def code_digest() -> str:
    """sha256 over the source of the ``dllm2rec`` package (every .py file)."""
    h = hashlib.sha256()
    for f in sorted(PACKAGE.rglob("*.py")):
        h.update(f"{f.relative_to(PACKAGE).as_posix()}\0{sha256(f)}\n".encode())
    return h.hexdigest()


def job_fingerprint(config, inputs=()) -> str:
    """The fingerprint of a job: its JSON-able ``config``, the content of each input path in
    ``inputs`` (files or folders; None entries allowed) and the package's code."""
    return fingerprint(config, [content_digest(p) if p else None for p in inputs], code_digest())


# A student job writes its checkpoint after an epoch once this many seconds have passed since its
# last one (or since its training started): a default-sized epoch takes well under a second and
# a checkpoint 10-40 ms, so writing one after every epoch cost a student job several percent of
# its time; a kill now loses at most this much training. Epochs longer than this (big datasets,
# a GPU's long epochs alike) are still checkpointed after every epoch. The SFT checkpoints after
# every epoch (its epochs take minutes).
STUDENT_CHECKPOINT_SECONDS = 10.0


class Cadence:
    """When a job writes its checkpoint: :meth:`due` after an epoch is true once ``seconds`` have
    passed (``clock``) since the last time it was true, or since the cadence was made; always
    true for ``seconds`` <= 0 (a checkpoint after every epoch)."""

    def __init__(self, seconds: float, clock: Callable[[], float] = time.monotonic):
        self.seconds, self.clock = float(seconds), clock
        self.last = clock()

    def due(self) -> bool:
        now = self.clock()
        if self.seconds > 0 and now - self.last < self.seconds:
            return False
        self.last = now
        return True


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
    try:  # tensors and plain values only (the trainers' states, RNG states as ByteTensors): no pickled code runs
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - truncated (a full disk, a kill mid-copy) or not a checkpoint
        log(f"ignoring {path}: it cannot be read as a checkpoint ({err.__class__.__name__}: "
            f"{str(err).strip().splitlines()[0][:160] if str(err).strip() else 'no detail'}); starting over")
        return None
    if not isinstance(ckpt, dict) or ckpt.get("fingerprint") != fp:
        log(f"ignoring {path}: it was made from other inputs (config, data or code); starting over")
        return None
    return ckpt


def remove_checkpoint(work) -> None:
    checkpoint_path(work).unlink(missing_ok=True)


def _print_flush(msg: str) -> None:
    progress(msg)


@contextlib.contextmanager
def report_kill(where: Callable[[], str], log: Callable[[str], None] = _print_flush):
    """While the block runs, a SIGTERM (Snakemake cancelling the job, a cluster's time limit, `kill`)
    logs ``killed by SIGTERM at <where()>`` before the job exits with status 143 (128 + SIGTERM).
    A SIGKILL (kill -9, the out-of-memory killer) cannot be caught: the log then simply ends."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        log(f"killed by SIGTERM at {where()}; the last checkpoint is kept, rerun to resume")
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
