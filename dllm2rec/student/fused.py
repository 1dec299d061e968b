"""Train a group of students together: one process, one stacked model (docs/students.md, "Fused training").

A **group** is a list of runs (members) of one (dataset, teacher, backbone, method) that differ
only in their seed, the student's ``lr`` and ``weight_decay`` and the method's
``fused_scalars`` (``dllm2rec/distill/spec.py``; DLLM2Rec's ``lambda_d``). :func:`train_group`
trains them and writes each member's usual run folder (:mod:`dllm2rec.student_run`), so
selection, tables and serving read a fused member exactly as a separate run.

How a stacked group trains (methods whose options say ``can_fuse``):

* every member is built as its separate run would be (:func:`dllm2rec.student.train.build_run`:
  ``torch.manual_seed(seed)``, then the student and the method), so it starts from the same
  weights; then the members' parameters are stacked along a leading member axis, and the
  training step (forward, the method's loss) runs once for all of them under
  ``torch.func.vmap`` over ``functional_call``: one kernel per operation for the whole group
  instead of one per member;
* each member draws its own permutation and negatives from its own ``torch.Generator`` (seeded
  as the separate run's), and its dropout masks from its own stream (:class:`Streams`), so a
  member's numbers do not depend on which other members share its group;
* :class:`StackedAdam` is Adam (coupled L2 weight decay, as ``torch.optim.Adam``) with a
  learning rate and a weight decay per member;
* after every epoch every member is validated (full ranking, vmapped too), keeps its best epoch
  and counts its own patience (:func:`dllm2rec.epochs.keep_best`, the loop's state of its
  separate run); a member that stops is taken out of the stack (frozen, its best epoch kept),
  the others go on;
* the group's state is checkpointed (``work/checkpoint.pt``) after an epoch once
  :data:`dllm2rec.resume.STUDENT_CHECKPOINT_SECONDS` have passed since the last checkpoint, and a
  killed group job resumes from it.

A group of one member is trained the same way (``student.fuse: false`` gives every point its own
group of one), so a member of a larger group differs from its own separate run only by the
order of floating-point sums in batched kernels (tests/test_student_fused.py states the
tolerance). Methods that cannot run under vmap (their step reads values back to the host or
draws from their own generators: the baselines but ``none``, DLLM2Rec with Table 8's Hint/HTD
swaps) and runs with partial teacher coverage train their members one after another with the
eager trainer (:func:`dllm2rec.student.train.train_loaded`, on the data and teacher tensors read
once for the group), each exactly as its separate run.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.func import functional_call, vmap

from dllm2rec import epochs, resume
from dllm2rec.distill.base import Batch
from dllm2rec.distill.common import distinct_items
from dllm2rec.evaluate import SELECT_METRIC, metrics_from_ranks, target_rank
from dllm2rec.io import UserError
from dllm2rec.io import progress as progress_line  # the log, and the terminal inside a rule
from dllm2rec.student import train as T
from dllm2rec.student.base import NoiseSource
from dllm2rec.student_groups import can_stack, fused_key

STREAM_SALT = 7919  # the dropout stream's seed is seed * 1000003 + STREAM_SALT


@dataclass
class Member:
    """One run of a group: its run name (``method``, e.g. ``dllm2rec@lambda_d=0.3``), params
    (``{"student", "method"[, "search"]}`` as the per-point rule passes them), seed and folders."""

    method: str
    params: dict
    seed: int
    out: Path


class Pair(nn.Module):
    """Student and method as one module, so that one ``functional_call`` swaps both's tensors."""

    def __init__(self, student: nn.Module, meth: nn.Module):
        super().__init__()
        self.student, self.meth = student, meth

    def forward(self, mode: str, batch: Batch, epoch: int = 0):
        if mode == "train":
            scores, state, rec = T.step_forward(self.student, self.meth, batch)
            dist = self.meth.loss(batch, scores, state, self.student, epoch)
            dist = dist if torch.is_tensor(dist) else scores.new_tensor(float(dist))
            return torch.stack([rec + dist, rec, dist])
        table = self.meth.item_table(self.student)
        state = self.student.encode(batch.history, batch.lengths, table)
        scores = self.meth.scores(self.student, self.meth.adjust_state(state, batch), batch)
        return target_rank(scores, batch.target)


class Streams:
    """Each member's random streams: the sampling generator of its separate run (permutation and
    negatives, ``torch.Generator().manual_seed(seed)``) and its dropout stream."""

    def __init__(self, seeds: list[int], device: torch.device):
        self.sample = [torch.Generator().manual_seed(s) for s in seeds]
        self.dropout = [torch.Generator(device=device).manual_seed(s * 1000003 + STREAM_SALT) for s in seeds]
        self.device = device

    def noise(self, n: int) -> torch.Tensor:
        return torch.stack([torch.rand(n, generator=g, device=self.device) for g in self.dropout])

    def state(self) -> dict:
        return {"sample": [g.get_state() for g in self.sample], "dropout": [g.get_state() for g in self.dropout]}

    def load(self, state: dict) -> None:
        for g, s in zip(self.sample + self.dropout, state["sample"] + state["dropout"]):
            g.set_state(s)


class StackedAdam:
    """Adam over stacked parameters [N, ...] with a learning rate and an L2 weight decay per member
    (``torch.optim.Adam``'s update: g += wd·p; m, v moments; bias corrections)."""

    def __init__(self, params: dict, lr: torch.Tensor, weight_decay: torch.Tensor, betas=(0.9, 0.999), eps=1e-8):
        self.params, self.lr, self.wd = params, lr, weight_decay
        self.b1, self.b2, self.eps = betas[0], betas[1], eps
        self.m = {k: torch.zeros_like(p) for k, p in params.items()}
        self.v = {k: torch.zeros_like(p) for k, p in params.items()}
        self.t = 0

    @staticmethod
    def _per_member(x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        return x.view(-1, *([1] * (like.dim() - 1)))

    @torch.no_grad()
    def step(self) -> None:
        self.t += 1
        c1, c2 = 1 - self.b1 ** self.t, 1 - self.b2 ** self.t
        for k, p in self.params.items():
            if p.grad is None:
                continue
            g = p.grad + self._per_member(self.wd, p) * p
            self.m[k].mul_(self.b1).add_(g, alpha=1 - self.b1)
            self.v[k].mul_(self.b2).addcmul_(g, g, value=1 - self.b2)
            denom = (self.v[k] / c2).sqrt_().add_(self.eps)
            p.sub_(self._per_member(self.lr, p) * (self.m[k] / c1) / denom)
            p.grad = None

    def keep(self, idx: torch.Tensor) -> None:
        """Drop the members not in ``idx`` (their parameters were already re-stacked)."""
        self.m = {k: v[idx] for k, v in self.m.items()}
        self.v = {k: v[idx] for k, v in self.v.items()}
        self.lr, self.wd = self.lr[idx], self.wd[idx]

    def state(self) -> dict:
        return {"m": self.m, "v": self.v, "t": self.t, "lr": self.lr, "wd": self.wd}

    def load(self, state: dict) -> None:
        self.m, self.v, self.t, self.lr, self.wd = state["m"], state["v"], state["t"], state["lr"], state["wd"]


def _stack(tensors: list[torch.Tensor]) -> torch.Tensor:
    return torch.stack([t.detach() for t in tensors])


class StackedGroup:
    """The active members' tensors, stacked: ``params`` (leaves with gradients) and the buffers
    that differ between members (``stacked``); buffers equal in every member are ``shared``."""

    def __init__(self, pairs: list[Pair]):
        self.template = pairs[0]
        named = [dict(p.named_parameters()) for p in pairs]
        self.params = {k: _stack([n[k] for n in named]).requires_grad_() for k in named[0]}
        bufs = [dict(p.named_buffers()) for p in pairs]
        self.shared, self.stacked = {}, {}
        for k, first in bufs[0].items():
            if all(b[k] is first or (b[k].shape == first.shape and torch.equal(b[k], first)) for b in bufs[1:]):
                self.shared[k] = first
            else:
                self.stacked[k] = _stack([b[k] for b in bufs])

    def keep(self, idx: torch.Tensor) -> None:
        self.params = {k: p.detach()[idx].requires_grad_() for k, p in self.params.items()}
        self.stacked = {k: b[idx] for k, b in self.stacked.items()}

    def member_state(self, i: int) -> dict:
        """Member ``i``'s tensors by their names in the :class:`Pair` (CPU copies)."""
        out = {k: p.detach()[i].cpu().clone() for k, p in self.params.items()}
        out.update({k: b[i].cpu().clone() for k, b in self.stacked.items()})
        return out

    def call(self, mode: str, in_dims_batch, *batch_args, epoch: int = 0, noise=None):
        """``Pair.forward(mode, Batch(*batch_args), epoch)`` for every active member at once."""
        template, shared = self.template, self.shared

        def one(params, stacked, member_noise, split, *args):
            NoiseSource.active = NoiseSource(member_noise) if member_noise is not None else None
            try:
                return functional_call(template, {**params, **stacked, **shared},
                                       (mode, Batch(split, *args), epoch), strict=False)
            finally:
                NoiseSource.active = None

        noise_dim = None if noise is None else 0
        fn = vmap(one, in_dims=(0, 0, noise_dim, None, *in_dims_batch), randomness="error")
        return fn(self.params, self.stacked, noise, *batch_args)


def _noise_size(group: StackedGroup, batch_args, in_dims) -> int:
    """How many uniform numbers one training step's dropout layers take (a counting pass of the
    first member on the batch's shapes)."""
    args = [a[0] if d == 0 else a for a, d in zip(batch_args[1:], in_dims)]
    params = {k: p.detach()[0] for k, p in group.params.items()}
    stacked = {k: b[0] for k, b in group.stacked.items()}
    counter = NoiseSource(None)
    NoiseSource.active = counter
    try:
        with torch.no_grad():
            functional_call(group.template, {**params, **stacked, **group.shared},
                            ("train", Batch(batch_args[0], *args), 0), strict=False)
    finally:
        NoiseSource.active = None
    return counter.used


class GroupTrainer:
    """The stacked training of one group (see the module docstring)."""

    def __init__(self, runs: list[T.Run], members: list[Member]):
        self.runs, self.members = runs, members
        r0 = runs[0]
        self.cfg, self.dev, self.n_items = r0.cfg, r0.device, r0.n_items
        self.splits, self.train_cpu = r0.splits, r0.train_cpu
        for r in runs:  # the GRU kernel has no vmap rule: the backbone writes its steps out
            r.student.stacked = True
        self.pairs = [Pair(r.student, r.meth) for r in runs]
        for p in self.pairs:
            p.train()
        self.group = StackedGroup(self.pairs)
        lr = torch.tensor([r.cfg.lr for r in runs], device=self.dev)
        wd = torch.tensor([r.cfg.weight_decay for r in runs], device=self.dev)
        self.opt = StackedAdam(self.group.params, lr, wd)
        self.streams = Streams([m.seed for m in members], self.dev)
        self.active = list(range(len(runs)))  # member indices still training, in stack order
        self.noise_sizes: dict[int, int] = {}
        self.epoch = 0
        self.seconds = 0.0

    # --- one epoch ------------------------------------------------------------------------
    def _epoch_rows(self):
        """Each active member's permutation and negatives [A, S] (its own generator)."""
        perms, negs = [], []
        tr = self.train_cpu
        for i in self.active:
            gen = self.streams.sample[i]
            perm = torch.randperm(len(tr.target), generator=gen)
            perms.append(perm)
            negs.append(T.sample_negatives(tr.history[perm], tr.target[perm], self.n_items, gen))
        return torch.stack(perms).to(self.dev), torch.stack(negs).to(self.dev)

    def train_epoch(self) -> torch.Tensor:
        """One pass over the train rows for every active member; [A, 3] mean loss, rec, distill."""
        tr, bs = self.splits["train"], self.cfg.batch_size
        perm, neg = self._epoch_rows()
        n_rows = perm.shape[1]
        sums = torch.zeros(len(self.active), 3, dtype=torch.float64, device=self.dev)
        dims = (0, 0, 0, 0, 0)
        sub = [self.streams.dropout[i] for i in self.active]
        for start in range(0, n_rows, bs):
            rows = perm[:, start:start + bs]
            args = ("train", rows, tr.history[rows], tr.lengths[rows], tr.target[rows], neg[:, start:start + bs])
            width = rows.shape[1]
            if width not in self.noise_sizes:
                self.noise_sizes[width] = _noise_size(self.group, args, dims)
            n = self.noise_sizes[width]
            if self.dev.type == "cpu":  # the items the step's tables need (torch.unique cannot run under vmap)
                self.group.template.meth.batch_items = distinct_items(args[2], self.n_items)
            noise = torch.stack([torch.rand(n, generator=g, device=self.dev) for g in sub]) if n else None
            losses = self.group.call("train", dims, *args, epoch=self.epoch, noise=noise)  # [A, 3]
            losses[:, 0].sum().backward()
            self.opt.step()
            sums += losses.detach().double() * width
        return sums / n_rows

    @torch.no_grad()
    def validate(self) -> list[dict]:
        """Every active member's full-ranking metrics on the validation split."""
        d = self.splits["valid"]
        self.group.template.eval()
        self.group.template.meth.batch_items = None
        try:
            # rows per batch so that the [A, rows, n] scores stay near 64M numbers
            step = max(1, min(self.cfg.eval_batch_size, (64 << 20) // max(1, len(self.active) * self.n_items)))
            ranks = []
            for start in range(0, len(d.target), step):
                rows = torch.arange(start, min(start + step, len(d.target)), device=self.dev)
                ranks.append(self.group.call("rank", (None, None, None, None, None), "valid", rows, d.history[rows],
                                             d.lengths[rows], d.target[rows], None).cpu())
            r = torch.cat(ranks, 1) if ranks else torch.zeros(len(self.active), 0, dtype=torch.long)
        finally:
            self.group.template.train()
        return [metrics_from_ranks(r[j]) for j in range(len(self.active))]

    # --- selection, stopping -----------------------------------------------------------------
    def select(self, valid: list[dict], sums: torch.Tensor, seconds: float, valid_seconds: float) -> list[int]:
        """Log the epoch and keep each member's best; returns the members that stop now."""
        stopping = []
        share = len(self.active)
        epoch = self.epoch + 1
        for j, i in enumerate(self.active):
            run, v, st = self.runs[i], valid[j], self.runs[i].state
            loss = sums[j].tolist()
            st["log"].append(T.log_row(epoch, loss, v, seconds / share, valid_seconds / share))
            st["train_seconds"] += (seconds + valid_seconds) / share
            if not all(np.isfinite(loss)):
                raise UserError(f"{self.members[i].method} seed {run.seed}: training diverged at epoch "
                                f"{epoch} (loss {loss[0]}); lower the learning rate or lambda_d")
            if epochs.keep_best(st, epoch, v[SELECT_METRIC], self.cfg.patience):
                st["best_valid"], st["best_weights"] = v, self.group.member_state(j)
            if st["stopped"] or epoch >= self.cfg.epochs:
                stopping.append(i)
        return stopping

    def drop(self, stopping: list[int]) -> None:
        keep = [j for j, i in enumerate(self.active) if i not in stopping]
        if len(keep) == len(self.active):
            return
        self.active = [self.active[j] for j in keep]
        if not self.active:
            return
        idx = torch.tensor(keep, device=self.dev)
        self.group.keep(idx)
        self.opt.params = self.group.params
        self.opt.keep(idx)

    # --- checkpoint ---------------------------------------------------------------------------
    def state(self) -> dict:
        return {"epoch": self.epoch, "active": self.active, "params": {k: p.detach() for k, p in self.group.params.items()},
                "stacked": self.group.stacked, "opt": self.opt.state(), "streams": self.streams.state(),
                "members": [r.state for r in self.runs], "seconds": self.seconds}

    def load(self, ck: dict) -> None:
        self.epoch, self.active, self.seconds = ck["epoch"], ck["active"], ck["seconds"]
        self.group.params = {k: p.clone().requires_grad_() for k, p in ck["params"].items()}
        self.group.stacked = ck["stacked"]
        self.opt.params = self.group.params
        self.opt.load(ck["opt"])
        self.streams.load(ck["streams"])
        for r, st in zip(self.runs, ck["members"]):
            r.state = st

    def progress(self, stopped_now: list[int]) -> str:
        best = max((r for r in self.runs if r.state["best_valid"]), key=lambda r: r.state["best_score"])
        b = best.state
        return (f"epoch {self.epoch}/{self.cfg.epochs}: {len(self.active)} of {len(self.runs)} members training"
                + (f" ({len(stopped_now)} stopped now)" if stopped_now else "")
                + f"; best valid {SELECT_METRIC} {b['best_score']:.4f} ({best.method} seed {best.seed}, epoch "
                  f"{b['best_epoch']})")


def _fit_stacked(trainer: GroupTrainer, work: Path, fp: str) -> None:
    ck = resume.load_checkpoint(work, fp)
    if ck is not None:
        trainer.load(ck)
        progress_line(f"resuming the group from {resume.checkpoint_path(work)} after epoch {trainer.epoch}", flush=True)
    cadence = resume.Cadence(resume.STUDENT_CHECKPOINT_SECONDS)
    while trainer.active:
        t0 = time.perf_counter()
        sums = trainer.train_epoch()
        if trainer.dev.type == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - t0
        valid = trainer.validate()
        valid_seconds = time.perf_counter() - t0 - seconds
        stopping = trainer.select(valid, sums, seconds, valid_seconds)
        trainer.epoch += 1
        trainer.seconds += seconds + valid_seconds
        trainer.drop(stopping)
        progress_line(trainer.progress(stopping), flush=True)
        if cadence.due():
            resume.save_checkpoint(work, fp, trainer.state())
            T._on_checkpoint(trainer.epoch)


def _write_member(run: T.Run, member: Member, identity: dict) -> dict:
    """Load the member's best tensors into its own modules and write its run folder."""
    tensors = run.state["best_weights"]  # the Pair's tensors
    pair = Pair(run.student, run.meth)
    pair.load_state_dict({k: v.to(run.device) for k, v in tensors.items()}, strict=False)
    for name, buf in pair.named_buffers():  # non-persistent buffers (e.g. lambda_d) are not in the state dict
        if name in tensors:
            buf.copy_(tensors[name])
    run.meth.batch_items, run.student.stacked = None, False
    run.state["best_weights"] = {"student": {k: v for k, v in run.student.state_dict().items()},
                                 "method": {k: v for k, v in run.meth.state_dict().items()}}
    return T._test_and_write(run, member.out, identity)


def train_group(data: str, backbone: str, members, work: str, teacher: str | None = None, threads=None,
                device: str = "auto", dataset: str | None = None, teacher_name: str | None = None) -> list[dict]:
    """Train a group's members and write each member's run folder; returns their metrics.

    ``members``: a list of ``{"method": run name, "params": {...}, "seed": s, "out": folder}``
    (JSON as the workflow passes it). ``work``: the group's work folder (its checkpoint)."""
    if isinstance(members, str):
        members = json.loads(members)
    members = [m if isinstance(m, Member) else Member(m["method"], m["params"], int(m["seed"]), Path(m["out"]))
               for m in members]
    if not members:
        raise UserError("train_group: no members")
    if threads not in (None, "", "None"):
        torch.set_num_threads(int(threads))
    if teacher in ("", "None", "none", "null"):
        teacher = None
    work = Path(work)
    first = members[0]
    stack = all(can_stack(m.params, m.method) for m in members)
    dev = T._device(device, T._student_params(first.params, backbone)[0])
    inputs = T.load_inputs(data, first.method, first.params["method"], teacher)
    if not stack or inputs.covered is not None:
        why = "partial teacher coverage" if stack else "its method cannot run stacked (docs/students.md)"
        progress_line(f"training the {len(members)} members one after another: {why}", flush=True)
        loaded = {T.inputs_key(first.method, first.params["method"]): inputs}  # read once, shared by the members
        out = []
        for i, m in enumerate(members):
            key = T.inputs_key(m.method, m.params["method"])
            if key not in loaded:
                loaded[key] = T.load_inputs(data, m.method, m.params["method"], teacher)
            out.append(T.train_loaded(loaded[key], data, backbone, m.method, m.params, m.seed, m.out,
                                      work / f"member{i}", teacher, dev, dataset, teacher_name))
        return out
    _check_fusable(members, backbone)
    runs = [T.build_run(inputs, backbone, m.method, m.params, m.seed, dev, optimizer=False) for m in members]
    progress_line(f"training {len(members)} members stacked ({backbone}, {first.params['method']['type']}, "
          f"{len(inputs.splits['train'].target)} train rows, device {dev})", flush=True)
    trainer = GroupTrainer(runs, members)
    fp = resume.job_fingerprint([[m.method, m.params, m.seed] for m in members] + [backbone, inputs.n_items],
                                [data, teacher])
    with resume.report_kill(lambda: f"epoch {trainer.epoch + 1}/{trainer.cfg.epochs}"):
        _fit_stacked(trainer, work, fp)
    out = []
    for run, m in zip(runs, members):
        identity = {"dataset": dataset or run.dataset_name, "teacher": teacher_name, "backbone": backbone,
                    "method": m.method, "params": m.params, "seed": m.seed}
        metrics = _write_member(run, m, identity)
        progress_line(f"done: {m.method} seed {m.seed}: {T.describe_result(metrics)}", flush=True)
        out.append(metrics)
    resume.remove_checkpoint(work)
    return out


def _check_fusable(members: list[Member], backbone: str) -> None:
    keys = {fused_key(m.params, m.method) for m in members}
    if len(keys) > 1:
        raise UserError(f"the members of a stacked group ({backbone}: {', '.join(m.method for m in members)}) differ "
                        "in more than seed, lr, weight_decay and the method's fused scalars; rebuild the DAG")
