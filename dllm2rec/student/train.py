"""Train one student (backbone x distillation method x seed) and write its artifacts.

``train_student(data, backbone, method, params, seed, out, work, teacher=None, threads=None, device="auto",
 dataset=None, teacher_name=None)``

``params`` = ``{"student": S, "method": M}``:

* ``S``: the config's ``student`` section: hidden, dropout, lr, batch_size, weight_decay, epochs,
  patience, eval_batch_size (optional device), and ``backbone``: the chosen backbone's sub-dict
  (``student.backbones.<backbone>``, e.g. ``{num_heads: 1, num_blocks: 1}``). If ``backbone`` is
  absent but ``backbones`` is present, ``backbones[<backbone>]`` is used.
* ``M``: the method's config entry (``methods.<method>``), including ``type``.

The trainer (docs/method.md §3, §6): every split's sequences are loaded once as tensors (histories
right-padded with ``n_items``); each epoch draws a permutation of the train rows and one negative
per row (uniform over items not in the history and != target); Adam; validation full ranking
after every epoch; the epoch with the best validation NDCG@20 is kept and training stops after
``patience`` epochs without improvement (the loop of :mod:`dllm2rec.epochs`, shared with the
SFT); test is evaluated once, on that checkpoint. A checkpoint is written to
``work/checkpoint.pt`` after an epoch once :data:`dllm2rec.resume.STUDENT_CHECKPOINT_SECONDS`
have passed since the last one (model, method, optimizer, RNG states, the loop's state: best
weights, log) and a rerun continues from it; it is deleted once ``out/`` is complete.

Outputs: the run folder of :mod:`dllm2rec.student_run` (model.pt, metrics.json with the run's identity,
train_log.csv, ranks.parquet: per valid/test sequence the target's rank and the top-20 items).
:func:`train_student` reads as its steps: :func:`_prepare` (data, teacher, model, optimizer),
:func:`_resume`, :func:`_fit` (:func:`_train_epoch`, validation, :func:`_keep`, :func:`_checkpoint`),
:func:`_test_and_write`.
"""
from __future__ import annotations

import copy
import dataclasses
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from dllm2rec import epochs, resume
from dllm2rec import student_run as run_files
from dllm2rec.dataset import SPLITS, load_dataset
from dllm2rec.distill.base import Batch, DistillContext, get_method
from dllm2rec.evaluate import HR, NDCG, SELECT_METRIC, TOP_K, evaluate, rank_split
from dllm2rec.io import UserError, progress
from dllm2rec import settings
from dllm2rec.settings import BackboneOptions, StudentSettings, parse
from dllm2rec.student.base import get_backbone
from dllm2rec.student.optim import FusedAdam
from dllm2rec.teacher import coverage


# --- data ---------------------------------------------------------------------------------
class SplitData:
    def __init__(self, seq_id: np.ndarray, history: torch.Tensor, lengths: torch.Tensor, target: torch.Tensor):
        self.seq_id, self.history, self.lengths, self.target = seq_id, history, lengths, target

    def to(self, device) -> "SplitData":
        return SplitData(self.seq_id, self.history.to(device), self.lengths.to(device), self.target.to(device))


def load_sequences(data) -> tuple[int, int, dict[str, SplitData]]:
    """``(n_items, max_len, {split: SplitData})`` of a dataset folder (read and checked by
    :func:`dllm2rec.dataset.load_dataset`); rows of a split keep their file order."""
    return _splits(load_dataset(data))


def _splits(dataset) -> tuple[int, int, dict[str, SplitData]]:
    p = dataset.padded()
    out = {}
    for split in SPLITS:
        mask = p.split == split
        out[split] = SplitData(p.seq_id[mask], torch.from_numpy(p.history[mask]), torch.from_numpy(p.lengths[mask]),
                               torch.from_numpy(p.target[mask]))
    return dataset.n_items, p.history.shape[1], out


def sample_negatives(history: torch.Tensor, target: torch.Tensor, n_items: int, gen: torch.Generator,
                     max_rounds: int = 1000) -> torch.Tensor:
    """One negative per row, uniform over items not in the row's history and != its target;
    collisions are redrawn (vectorised) until none is left."""
    neg = torch.randint(0, n_items, target.shape, generator=gen)
    for _ in range(max_rounds):
        bad = (neg.unsqueeze(1) == history).any(1) | (neg == target)
        n_bad = int(bad.sum())
        if not n_bad:
            return neg
        neg[bad] = torch.randint(0, n_items, (n_bad,), generator=gen)
    raise UserError(f"cannot sample negatives: some history covers (almost) all {n_items} items")


# --- params --------------------------------------------------------------------------------
def _student_params(params: dict, backbone: str) -> tuple[StudentSettings, BackboneOptions]:
    """The student settings and the backbone's options of a run's params (dllm2rec/settings.py)."""
    if not isinstance(params, dict) or "student" not in params or "method" not in params:
        raise UserError('params must be {"student": <student config>, "method": <method config incl. type>}')
    s = params["student"]
    cfg = parse(StudentSettings, s, "student", skip=("backbone", "backbones"))
    bb = s["backbone"] if "backbone" in s else (s.get("backbones") or {}).get(backbone)
    return cfg, settings.backbone_options(backbone, bb)


def _device(device: str, s: StudentSettings) -> torch.device:
    want = device if device not in (None, "auto") else s.device
    if want in (None, "auto"):
        want = "cuda" if torch.cuda.is_available() else "cpu"
    if str(want).startswith("cuda") and not torch.cuda.is_available():
        raise UserError("device cuda requested but no GPU is available; use device auto or cpu")
    return torch.device(want)


def _dedup_params(*modules):
    seen, out = set(), []
    for m in modules:
        for p in m.parameters():
            if id(p) not in seen and p.requires_grad:
                seen.add(id(p))
                out.append(p)
    return out


def build(backbone: str, method: str, params: dict, n_items: int, max_len: int, ctx: DistillContext):
    """Instantiate (student, method) from names and params."""
    cfg, bb = _student_params(params, backbone)
    student = get_backbone(backbone)(n_items, hidden=cfg.hidden, dropout=cfg.dropout, max_len=max_len,
                                     item_counts=ctx.item_counts, **dataclasses.asdict(bb))
    mcfg = dict(params["method"])
    mtype = mcfg.get("type", method)
    meth = get_method(mtype)(mcfg, ctx, student)
    return student, meth


def backbone_options(params: dict, backbone: str) -> dict:
    """The backbone's constructor options besides n_items and max_len (recorded in model.pt)."""
    cfg, bb = _student_params(params, backbone)
    return {"hidden": cfg.hidden, "dropout": cfg.dropout, **dataclasses.asdict(bb)}


def _on_checkpoint(epoch: int) -> None:
    """Called after each epoch's checkpoint is on disk (tests patch it to simulate a kill)."""


# --- training --------------------------------------------------------------------------------
@dataclass
class Run:
    """Everything one training run works with, built by :func:`_prepare`."""

    backbone: str
    method: str
    params: dict
    seed: int
    cfg: StudentSettings
    device: torch.device
    n_items: int
    max_len: int
    splits: dict  # {split: SplitData} on the device
    train_cpu: SplitData  # the train split on the CPU (negative sampling)
    dataset_name: str
    student: torch.nn.Module = None
    meth: torch.nn.Module = None
    opt: FusedAdam = None
    gen: torch.Generator = None
    # the epoch loop's state (dllm2rec.epochs) plus the best epoch's validation metrics and weights
    state: dict = field(default_factory=lambda: epochs.new_state(best_valid=None, best_weights=None, train_seconds=0.0))
    covered: torch.Tensor | None = None  # bool [S_train]: rows with teacher output; None = all (teacher coverage)
    covered_row: torch.Tensor | None = None  # [S_train] long: a covered row's index among the covered rows
    forward: object = None  # :func:`step_forward`, compiled with ``student.compile`` (:func:`_training_forward`)
    dataset_fingerprint: str | None = None  # the dataset's content (dllm2rec.dataset.Dataset.fingerprint), in model.pt


def _load_teacher(teacher, method: str, mcfg: dict, splits: dict, n_items: int, dataset_fingerprint=None):
    """The teacher tensors the method reads (its required parts, for the splits it needs), or None."""
    mcls = get_method(mcfg.get("type", method))
    parts = mcls.parse_options(mcfg, method).teacher_parts()  # errors name methods.<method>.<key>
    if not parts:
        return None
    if teacher is None:
        raise UserError(f"method {method!r} reads the teacher's {sorted(parts)}: pass --teacher DIR")
    from dllm2rec.distill.teacher_data import load_teacher

    which = SPLITS if mcls.uses_teacher_at_inference else ("train",)
    opt = mcls.parse_options(mcfg, method)
    if not opt.partial_coverage:
        _refuse_partial_coverage(teacher, method)
    return load_teacher(teacher, {s: splits[s].seq_id for s in which}, n_items, parts, dataset_fingerprint)


def _refuse_partial_coverage(teacher, method: str) -> None:
    """A method that reads teacher output for every training row cannot train on a teacher that
    covers only some of them (docs/teacher.md, "Teacher coverage")."""
    from dllm2rec import teacher_artifacts as ta

    ranks = ta.path(teacher, "ranks", "train")
    info = ta.read_coverage(ranks) if ranks.exists() else {}
    if coverage.is_partial(info.get(coverage.KEY)) and info.get("n_covered") != info.get("n_rows"):
        raise UserError(f"method {method!r} needs teacher output for every training sequence, but the teacher at "
                        f"{teacher} covers {info.get('n_covered')} of {info.get('n_rows')} (generation.train_coverage "
                        f"{info.get('train_coverage')!r}): set it to `all`, or leave {method!r} out of this run.")


def _covered_rows(tt, train: SplitData):
    """``(covered bool [S] or None, the train rows a method sees)``: under partial teacher coverage a
    method sees only the covered train rows (in file order); otherwise all of them."""
    covered = tt.splits["train"].covered if tt is not None and "train" in tt.splits else None
    if covered is None:
        return None, train
    keep = covered.numpy()
    return covered, SplitData(train.seq_id[keep], train.history[covered], train.lengths[covered], train.target[covered])


def _distill_loss(run: "Run", batch: Batch, scores: torch.Tensor, state: torch.Tensor, epoch: int) -> torch.Tensor:
    """The method's distillation term for a training batch.

    Teacher coverage, once for every method: rows without teacher output get no distillation
    loss. The method's ``loss`` sees the batch's covered rows alone (rows renumbered to the
    covered rows it was built on) and the result is scaled by their share of the batch, so a
    per-row mean over the covered rows becomes a sum over them divided by the batch size: each
    covered row weighs what it weighs under full coverage, an uncovered row weighs nothing.
    With full coverage (``run.covered`` None) this is exactly ``meth.loss(batch, ...)``."""
    if run.covered is None:
        return run.meth.loss(batch, scores, state, run.student, epoch)
    keep = run.covered[batch.rows]
    n = int(keep.sum())
    if n == 0:
        return scores.new_zeros(())
    sub = Batch(batch.split, run.covered_row[batch.rows[keep]], batch.history[keep], batch.lengths[keep],
                batch.target[keep], None if batch.negative is None else batch.negative[keep])
    dist = run.meth.loss(sub, scores[keep], state[keep], run.student, epoch)
    return dist * (n / len(batch.rows))


@dataclass
class Inputs:
    """What every run of one (dataset, teacher, method) reads, loaded once (:func:`load_inputs`)."""

    dataset_name: str
    n_items: int
    max_len: int
    splits: dict  # {split: SplitData} on the CPU
    item_counts: torch.Tensor
    teacher: object  # TeacherTensors or None
    covered: torch.Tensor | None
    seen: SplitData  # the train rows a method is built on
    dataset_fingerprint: str | None = None  # the dataset's content (dllm2rec.dataset.Dataset.fingerprint), in model.pt


def load_inputs(data, method: str, method_cfg: dict, teacher) -> Inputs:
    """The dataset's splits and the teacher tensors the method reads."""
    dataset = load_dataset(data)
    n_items, max_len, splits = _splits(dataset)
    tr = splits["train"]
    tt = _load_teacher(teacher, method, dict(method_cfg), splits, n_items, dataset.fingerprint)
    covered, seen = _covered_rows(tt, tr)
    return Inputs(dataset.name, n_items, max_len, splits, torch.bincount(tr.target, minlength=n_items), tt, covered,
                  seen, dataset.fingerprint)


def inputs_key(method: str, method_cfg: dict) -> tuple:
    """What :func:`load_inputs` reads for a method's configuration beyond the data and teacher
    folders (the method's class and the teacher parts it needs): configurations with equal keys
    can share one load."""
    mcls = get_method(method_cfg.get("type", method))
    return mcls.__name__, tuple(sorted(mcls.parse_options(method_cfg, method).teacher_parts()))


def build_run(inputs: Inputs, backbone, method, params, seed, dev: torch.device, optimizer: bool = True) -> Run:
    """Student, method, optimizer (unless ``optimizer`` is false: fused training has its own)
    and sampling generator of one run, seeded as the run is."""
    cfg, _ = _student_params(params, backbone)
    seen = inputs.seen
    torch.manual_seed(seed)
    ctx = DistillContext(n_items=inputs.n_items, hidden=cfg.hidden, teacher=inputs.teacher,
                         item_counts=inputs.item_counts, train_history=seen.history, train_lengths=seen.lengths,
                         train_target=seen.target, seed=seed, max_epochs=cfg.epochs)
    student, meth = build(backbone, method, params, inputs.n_items, inputs.max_len, ctx)
    student.to(dev)
    meth.to(dev)
    # fused Adam (one kernel over all parameters; CPU and CUDA): same update rule, ~3x less overhead
    opt = FusedAdam(_dedup_params(student, meth), lr=cfg.lr, weight_decay=cfg.weight_decay) if optimizer else None
    gen = torch.Generator().manual_seed(seed)
    splits = inputs.splits
    run = Run(backbone, method, params, seed, cfg, dev, inputs.n_items, inputs.max_len,
              {s: d.to(dev) for s, d in splits.items()}, splits["train"], inputs.dataset_name, student, meth, opt, gen)
    run.forward = _training_forward(dev, cfg.compile)
    run.dataset_fingerprint = inputs.dataset_fingerprint
    if inputs.covered is not None:
        run.covered = inputs.covered.to(dev)
        run.covered_row = (torch.cumsum(inputs.covered.long(), 0) - 1).to(dev)  # split row -> covered row
    return run


def _prepare(data, backbone, method, params, seed, teacher, device) -> Run:
    """Load the data and the teacher, build student, method, optimizer and sampling generator."""
    dev = _device(device, _student_params(params, backbone)[0])
    return build_run(load_inputs(data, method, params["method"], teacher), backbone, method, params, seed, dev)


def step_forward(student, meth, batch: Batch):
    """The training step's forward pass up to the method's own loss: ``(scores, state, rec)``.

    The item table (the method's, e.g. DLLM2Rec's projected teacher embeddings), the backbone's
    state, the method's state adjustment and scores, and the backbone's loss L_r. On a GPU nothing
    here reads a value back to the host (tests/test_student_compile.py runs it on the meta device),
    so the step can be queued ahead and, compiled, replayed as one CUDA graph."""
    table = meth.item_table_for(student, batch.history)
    state = meth.adjust_state(student.encode(batch.history, batch.lengths, table), batch)
    scores = meth.scores(student, state, batch)
    return scores, state, student.rec_loss(scores, batch.target, batch.negative)


def _training_forward(device: torch.device, compile_step: bool):
    """:func:`step_forward`, or, with ``student.compile``, the same function through
    ``torch.compile`` (forward and backward fused by Inductor; on a GPU in ``reduce-overhead``
    mode, which replays each step as a CUDA graph instead of launching its kernels one by one).
    The method's distillation loss stays eager (some methods change with the epoch number, which
    would recompile a graph every epoch), and so do validation and test. The math is the same;
    the compiled dropout draws from Inductor's own random stream, so runs agree with the eager
    ones within seed noise, not bit for bit (exactly, with
    ``torch._inductor.config.fallback_random = True``: tests/test_student_compile.py)."""
    if not compile_step:
        return step_forward
    mode = "reduce-overhead" if device.type == "cuda" else None
    # dynamic=False: the full batches and the last one get a graph each, nothing is recompiled
    compiled = torch.compile(step_forward, mode=mode, dynamic=False)
    # a compilation or graph capture that fails on the user's machine falls back to the eager
    # step with one log line (it happens at the first call): a long run never dies for it
    from dllm2rec.fallback import Guarded

    return Guarded("the compiled student step (student.compile)", compiled, step_forward)


def epoch_loop(run: Run, work: Path, fp: str) -> epochs.EpochLoop:
    """The run's epochs: selected on validation NDCG@20, ``epochs`` and ``patience`` from its
    settings, checkpointed at :data:`dllm2rec.resume.STUDENT_CHECKPOINT_SECONDS`."""
    return epochs.EpochLoop(work, fp, run.cfg.epochs, run.cfg.patience, SELECT_METRIC,
                            checkpoint_seconds=resume.STUDENT_CHECKPOINT_SECONDS)


def _resume(run: Run, loop: epochs.EpochLoop) -> None:
    """Continue from the work folder's checkpoint when it was made by this same run."""
    def restore(ck: dict) -> None:
        run.student.load_state_dict(ck["student"])
        run.meth.load_state_dict(ck["method"])
        run.opt.load_state_dict(ck["optimizer"])
        run.gen.set_state(ck["gen"])
        run.meth.set_rng_state(ck.get("method_rng"))
        torch.set_rng_state(ck["torch_rng"])
        if run.device.type == "cuda" and ck.get("cuda_rng") is not None:
            torch.cuda.set_rng_state_all(ck["cuda_rng"])

    run.state = loop.resume(restore) or run.state


def _train_epoch(run: Run, epoch: int) -> list[float]:
    """One pass over the train rows (a fresh permutation and negatives); mean loss, rec, distill."""
    student, meth, dev = run.student, run.meth, run.device
    tr, bs = run.splits["train"], run.cfg.batch_size
    student.train()
    meth.train()
    perm = torch.randperm(len(tr.target), generator=run.gen)
    negs = sample_negatives(run.train_cpu.history[perm], run.train_cpu.target[perm], run.n_items, run.gen)
    perm_d, negs_d = perm.to(dev), negs.to(dev)
    sums = torch.zeros(3, dtype=torch.float64, device=dev)
    compiled_graphs = run.cfg.compile and dev.type == "cuda"  # reduce-overhead: CUDA graphs
    for start in range(0, len(perm), bs):
        rows = perm_d[start:start + bs]
        batch = Batch("train", rows, tr.history[rows], tr.lengths[rows], tr.target[rows], negs_d[start:start + bs])
        if compiled_graphs:
            torch.compiler.cudagraph_mark_step_begin()  # the previous step's graph outputs are consumed
        scores, st, rec = run.forward(student, meth, batch)
        dist = _distill_loss(run, batch, scores, st, epoch)
        loss = rec + dist
        run.opt.zero_grad(set_to_none=True)
        loss.backward()
        run.opt.step()
        sums += torch.stack([loss.detach(), rec.detach(), torch.as_tensor(dist).detach()]).double() * len(rows)
    sums = (sums / len(perm)).tolist()
    if dev.type == "cuda":
        torch.cuda.synchronize()
    if not all(np.isfinite(sums)):
        raise UserError(f"training diverged at epoch {epoch + 1} (loss {sums[0]}); lower the learning rate "
                        "or lambda_d")
    return sums


def _evaluate(run: Run, split: str) -> dict:
    d = run.splits[split]
    return evaluate(run.student, run.meth, split, d.history, d.lengths, d.target, run.cfg.eval_batch_size)


def _rank(run: Run, split: str):
    """(0-based target ranks, top-20 item lists) of one split, for ranks.parquet."""
    d = run.splits[split]
    return rank_split(run.student, run.meth, split, d.history, d.lengths, d.target, run.cfg.eval_batch_size,
                      top_k=TOP_K)


def log_row(epoch: int, sums, valid: dict, seconds: float, valid_seconds: float) -> dict:
    """One row of train_log.csv (:data:`dllm2rec.student_run.LOG_FIELDS`): the epoch's mean losses and validation metrics."""
    return {"epoch": epoch, "loss": sums[0], "rec_loss": sums[1], "distill_loss": sums[2],
            f"valid_{HR}": valid[HR], f"valid_{NDCG}": valid[NDCG], "seconds": seconds, "valid_seconds": valid_seconds}


def describe_epoch(row: dict, epochs_total) -> str:
    """The progress line of a finished epoch (before the loop's best-epoch tail)."""
    return (f"epoch {row['epoch']}/{epochs_total}: loss {row['loss']:.4f} (rec {row['rec_loss']:.4f}, distill "
            f"{row['distill_loss']:.4f}) valid {HR} {row[f'valid_{HR}']:.4f} {NDCG} {row[f'valid_{NDCG}']:.4f} "
            f"({row['seconds']:.1f}s)")


def _keep(run: Run, valid: dict) -> None:
    """The new best epoch: its validation metrics and (copies of) its weights."""
    run.state["best_valid"] = valid
    run.state["best_weights"] = {
        "student": copy.deepcopy({k: v.cpu() for k, v in run.student.state_dict().items()}),
        "method": copy.deepcopy({k: v.cpu() for k, v in run.meth.state_dict().items()})}


def _checkpoint(run: Run, loop: epochs.EpochLoop) -> None:
    loop.checkpoint(run.state, {
        "student": run.student.state_dict(), "method": run.meth.state_dict(), "optimizer": run.opt.state_dict(),
        "gen": run.gen.get_state(), "torch_rng": torch.get_rng_state(), "method_rng": run.meth.rng_state(),
        "cuda_rng": torch.cuda.get_rng_state_all() if run.device.type == "cuda" else None})
    _on_checkpoint(run.state["epoch"])


def _fit(run: Run, loop: epochs.EpochLoop) -> None:
    """Epochs until ``epochs`` or early stopping (:meth:`dllm2rec.epochs.EpochLoop.run`), a checkpoint after each."""
    def train_epoch(epoch: int):
        t0 = time.perf_counter()
        sums = _train_epoch(run, epoch - 1)  # the methods count epochs from 0
        seconds = time.perf_counter() - t0
        valid = _evaluate(run, "valid")
        valid_seconds = time.perf_counter() - t0 - seconds
        run.state["train_seconds"] += seconds + valid_seconds
        return log_row(epoch, sums, valid, seconds, valid_seconds), valid[SELECT_METRIC], valid

    loop.run(run.state, train_epoch, keep=lambda epoch, valid: _keep(run, valid),
             describe=lambda epoch, row: describe_epoch(row, run.cfg.epochs), checkpoint=lambda: _checkpoint(run, loop))


def _test_and_write(run: Run, out: Path, identity: dict) -> dict:
    """Load the selected epoch, test it once, write the run's outputs; returns the metrics."""
    state = run.state
    student, meth = run.student, run.meth
    student.load_state_dict(state["best_weights"]["student"])
    meth.load_state_dict(state["best_weights"]["method"])
    t0 = time.perf_counter()
    test = _evaluate(run, "test")
    inference_seconds = time.perf_counter() - t0
    ranks = {split: _rank(run, split) for split in ("valid", "test")}  # ranks.parquet (Tables 2-3, p-values)
    metrics = {**identity, "valid": state["best_valid"], "test": test, "best_epoch": state["best_epoch"],
               "epochs_run": state["epoch"], "train_seconds": state["train_seconds"],
               "inference_seconds": inference_seconds,
               "n_params": sum(p.numel() for p in _dedup_params(student, meth))}
    student.eval()
    meth.eval()
    with torch.no_grad():
        table = meth.item_table(student).detach().cpu()
    mcfg = dict(run.params["method"])
    meta = {"dataset": identity["dataset"], "dataset_fingerprint": run.dataset_fingerprint,
            "backbone": run.backbone, "backbone_options": backbone_options(run.params, run.backbone),
            "method": run.method, "method_type": mcfg.get("type", run.method), "n_items": run.n_items,
            "max_len": run.max_len, "params": run.params, "seed": run.seed, "best_epoch": state["best_epoch"],
            "uses_teacher_at_inference": bool(meth.uses_teacher_at_inference)}
    model = {"meta": meta, "student_state": student.state_dict(), "method_state": meth.state_dict(),
             "item_table": table}
    ranks_table = run_files.ranks_table({split: (run.splits[split].seq_id, run.splits[split].target.cpu().numpy(),
                                                 r.numpy(), top.tolist()) for split, (r, top) in ranks.items()})
    run_files.write_run(out, metrics, model, state["log"], ranks=ranks_table)
    return metrics


def describe_result(metrics: dict) -> str:
    """A finished run in a line: its best epoch, validation and test metrics."""
    return (f"best epoch {metrics['best_epoch']} of {metrics['epochs_run']} run, valid {NDCG} "
            f"{metrics['valid'][NDCG]:.4f}, test {HR} {metrics['test'][HR]:.4f} {NDCG} {metrics['test'][NDCG]:.4f}")


def train_student(data: str, backbone: str, method: str, params: dict, seed: int, out: str, work: str,
                  teacher: str | None = None, threads: int | None = None, device: str = "auto",
                  dataset: str | None = None, teacher_name: str | None = None) -> dict:
    """Train, select on validation NDCG@20, test once; write out/{model.pt,metrics.json,train_log.csv}.
    ``dataset`` and ``teacher_name`` are recorded in metrics.json as the run's identity (the
    dataset's name defaults to the one the data stage recorded). Returns the metrics dict."""
    seed = int(seed)
    if isinstance(params, str):
        params = json.loads(params)
    if threads not in (None, "", "None"):
        torch.set_num_threads(int(threads))
    if teacher in ("", "None", "none", "null"):
        teacher = None
    dev = _device(device, _student_params(params, backbone)[0])
    inputs = load_inputs(data, method, params["method"], teacher)
    return train_loaded(inputs, data, backbone, method, params, seed, out, work, teacher, dev, dataset, teacher_name)


def train_loaded(inputs: Inputs, data, backbone: str, method: str, params: dict, seed: int, out, work, teacher,
                 dev: torch.device, dataset=None, teacher_name=None) -> dict:
    """:func:`train_student` on ``inputs`` already loaded (:func:`load_inputs` of ``data`` and
    ``teacher`` for this method's :func:`inputs_key`): the members of a group trained one after
    another share them (dllm2rec/student/fused.py)."""
    out, work = Path(out), Path(work)
    run = build_run(inputs, backbone, method, params, seed, dev)
    fp = resume.job_fingerprint([params, backbone, method, seed, run.n_items, run.max_len,
                                 len(run.splits["train"].target)], [data, teacher])
    loop = epoch_loop(run, work, fp)
    _resume(run, loop)
    with resume.report_kill(lambda: f"epoch {run.state['epoch'] + 1}/{run.cfg.epochs}"):
        _fit(run, loop)
    identity = {"dataset": dataset or run.dataset_name, "teacher": teacher_name, "backbone": backbone,
                "method": method, "params": params, "seed": seed}
    metrics = _test_and_write(run, out, identity)
    resume.remove_checkpoint(work)
    progress(f"done: {describe_result(metrics)}, {metrics['train_seconds']:.0f}s training; outputs in {out}", flush=True)
    return metrics

