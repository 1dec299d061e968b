"""The epoch loop every trainer shares: resume, keep the best epoch, patience, a progress line.

Used by the student trainer (:func:`dllm2rec.student.train.train_student`), the teacher's SFT
(:func:`dllm2rec.teacher.sft.train_adapter`) and, member by member, fused student groups
(:mod:`dllm2rec.student.fused`, which steps all members at once and calls :func:`keep_best`
for each). One loop, one set of state names (:func:`new_state`):

* ``epoch``: epochs finished (the next one is ``epoch + 1``; epochs count from 1);
* ``best_epoch``, ``best_score``: the epoch with the best selection score so far (0 and None
  before the first), a strict improvement replacing it (the earlier of equal scores is kept);
* ``bad_epochs``: epochs since then without improvement; ``stopped``: ``bad_epochs`` reached
  ``patience`` (early stopping; reaching ``epochs`` is not a stop);
* ``log``: one row per epoch, the trainer's columns (students' ``train_log.csv``, the SFT's
  ``curve`` in teacher_sft.json);

plus the trainer's own keys (the student's best weights, its training seconds; the SFT's step).
The state is a plain dict of plain values and tensors: a checkpoint holds it as it is, next
to the trainer's weights, optimiser and random states (:meth:`EpochLoop.checkpoint`; the file
and its fingerprint are :mod:`dllm2rec.resume`'s), after every epoch or, with
``checkpoint_seconds``, after an epoch once that long has passed since the last one
(:class:`dllm2rec.resume.Cadence`), and a rerun continues from the last checkpointed epoch
(:meth:`EpochLoop.resume`). It imports no torch.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from dllm2rec import resume
from dllm2rec.io import progress


def new_state(**extra) -> dict:
    """A loop's state before its first epoch (see the module docstring), with the trainer's keys."""
    return {"epoch": 0, "best_epoch": 0, "best_score": None, "bad_epochs": 0, "stopped": False, "log": [], **extra}


def keep_best(state: dict, epoch: int, score: float, patience: int, higher_is_better: bool = True) -> bool:
    """Record that ``epoch`` finished with selection ``score``: it becomes the best epoch when it
    improves strictly on the best so far (returns True), else one more epoch without improvement;
    ``stopped`` once ``patience`` such epochs follow the best."""
    best = state["best_score"]
    improved = best is None or (score > best if higher_is_better else score < best)
    if improved:
        state.update(best_epoch=epoch, best_score=score, bad_epochs=0)
    else:
        state["bad_epochs"] += 1
    state["epoch"] = epoch
    state["stopped"] = state["bad_epochs"] >= int(patience)
    return improved


def best_line(state: dict, score_name: str) -> str:
    """The progress line's tail: the best epoch so far, and why training stops if it does."""
    return (f"best {score_name} {state['best_score']:.4f} at epoch {state['best_epoch']}"
            + (f", stopping: {state['bad_epochs']} epochs without improvement" if state["stopped"] else ""))


@dataclass
class EpochLoop:
    """Epochs ``1..epochs`` of one job, early-stopped after ``patience`` epochs without
    improvement of the selection score (named ``score_name`` in the log; higher is better unless
    ``higher_is_better`` is false), checkpointed after every epoch in ``work`` under ``fingerprint``
    (:func:`dllm2rec.resume.job_fingerprint`), or with ``checkpoint_seconds`` > 0 only after an
    epoch once that long has passed since the last checkpoint. ``log`` writes a progress line."""

    work: Path
    fingerprint: str
    epochs: int
    patience: int
    score_name: str
    higher_is_better: bool = True
    log: Callable[[str], None] = progress
    checkpoint_seconds: float = 0.0

    def resume(self, restore: Callable[[dict], None]) -> dict | None:
        """The state saved by the last finished epoch, after ``restore(checkpoint)`` has put the
        trainer's own parts back; None (start afresh) without a checkpoint of this job."""
        ck = resume.load_checkpoint(self.work, self.fingerprint, log=self.log)
        if ck is None:
            return None
        restore(ck)
        self.log(f"resuming from {resume.checkpoint_path(self.work)} after epoch {ck['state']['epoch']}")
        return ck["state"]

    def checkpoint(self, state: dict, parts: dict) -> None:
        """Save the trainer's ``parts`` (weights, optimiser, random states) and the loop's ``state``."""
        resume.save_checkpoint(self.work, self.fingerprint, {**parts, "state": state})

    def run(self, state: dict, train_epoch: Callable[[int], tuple[dict, float, Any]],
            keep: Callable[[int, Any], None], describe: Callable[[int, dict], str],
            checkpoint: Callable[[], None]) -> None:
        """Train until ``epochs`` or early stopping. Per epoch ``e`` (from 1):
        ``train_epoch(e) -> (log row, selection score, what keep needs)``; ``keep(e, that)`` when
        ``e`` is the new best (the trainer keeps its weights); the progress line
        ``describe(e, row)`` + :func:`best_line`; then ``checkpoint()`` when one is due."""
        cadence = resume.Cadence(self.checkpoint_seconds)
        while state["epoch"] < self.epochs and not state["stopped"]:
            epoch = state["epoch"] + 1
            row, score, kept = train_epoch(epoch)
            state["log"].append(row)
            if keep_best(state, epoch, score, self.patience, self.higher_is_better):
                keep(epoch, kept)
            self.log(f"{describe(epoch, row)}; {best_line(state, self.score_name)}")
            if cadence.due():
                checkpoint()
