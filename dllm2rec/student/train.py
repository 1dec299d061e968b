"""Train one student (backbone x distillation method x seed) and write its artifacts.

``train_student(data, backbone, method, params, seed, out, work, teacher=None, threads=None, device="auto")``

``params`` = ``{"student": S, "method": M}``:

* ``S``: the config's ``student`` section: hidden, dropout, lr, batch_size, weight_decay, epochs,
  patience, eval_batch_size (optional device), and ``backbone``: the chosen backbone's sub-dict
  (``student.backbones.<backbone>``, e.g. ``{num_heads: 1, num_blocks: 1}``). If ``backbone`` is
  absent but ``backbones`` is present, ``backbones[<backbone>]`` is used.
* ``M``: the method's config entry (``methods.<method>``), including ``type``.

The trainer (SPEC §3, §6): every split's sequences are loaded once as tensors (histories
right-padded with ``n_items``); each epoch draws a permutation of the train rows and one negative
per row (uniform over items not in the history and != target); Adam; validation full ranking
after every epoch; the epoch with the best validation NDCG@20 is kept and training stops after
``patience`` epochs without improvement; test is evaluated once, on that checkpoint. A checkpoint
is written to ``work/checkpoint.pt`` after every epoch (model, method, optimizer, RNG states,
best state, log) and a rerun continues from it; it is deleted once ``out/`` is complete.

Outputs (each written atomically): ``out/model.pt``, ``out/metrics.json``, ``out/train_log.csv``.
"""
from __future__ import annotations

import copy
import csv
import hashlib
import io
import json
import time
from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import torch

from dllm2rec.distill.base import Batch, DistillContext, get_method
from dllm2rec.evaluate import evaluate
from dllm2rec.io import UserError, atomic_path, read_parquet, write_json
from dllm2rec.student.base import get_backbone

STUDENT_KEYS = {"hidden", "dropout", "lr", "batch_size", "weight_decay", "epochs", "patience",
                "eval_batch_size", "device", "backbone", "backbones"}
SPLITS = ("train", "valid", "test")
LOG_FIELDS = ["epoch", "loss", "rec_loss", "distill_loss", "valid_HR@20", "valid_NDCG@20", "seconds", "valid_seconds"]
FORMAT = "dllm2rec-student/1"


# --- data ---------------------------------------------------------------------------------
class SplitData:
    def __init__(self, seq_id: np.ndarray, history: torch.Tensor, lengths: torch.Tensor, target: torch.Tensor):
        self.seq_id, self.history, self.lengths, self.target = seq_id, history, lengths, target

    def to(self, device) -> "SplitData":
        return SplitData(self.seq_id, self.history.to(device), self.lengths.to(device), self.target.to(device))


def load_sequences(data) -> tuple[int, int, dict[str, SplitData]]:
    """``(n_items, max_len, {split: SplitData})`` from ``{data}/items.parquet`` and
    ``{data}/sequences.parquet``; rows of a split keep their file order."""
    data = Path(data)
    items = read_parquet(data / "items.parquet", "items table")
    ids = items.column("item_id").to_numpy()
    n_items = len(ids)
    if n_items == 0 or not np.array_equal(np.sort(ids), np.arange(n_items)):
        raise UserError(f"{data / 'items.parquet'}: item_id must be exactly 0..n-1; rebuild the dataset.")
    seqs = read_parquet(data / "sequences.parquet", "sequences table")
    hist_col = seqs.column("history").combine_chunks()
    offsets = np.asarray(hist_col.offsets, dtype=np.int64)
    flat = hist_col.flatten().to_numpy(zero_copy_only=False).astype(np.int64)
    lengths_all = np.diff(offsets)
    max_len = int(lengths_all.max()) if len(lengths_all) else 1
    split_col = seqs.column("split").combine_chunks()
    targets = seqs.column("target").to_numpy().astype(np.int64)
    seq_ids = seqs.column("seq_id").to_numpy().astype(np.int64)
    if (lengths_all < 1).any():
        bad = int(seq_ids[np.flatnonzero(lengths_all < 1)[0]])
        raise UserError(f"{data / 'sequences.parquet'}: seq_id {bad} has an empty history; rebuild the dataset.")
    if len(flat) and (flat.min() < 0 or flat.max() >= n_items) or len(targets) and (targets.min() < 0 or targets.max() >= n_items):
        raise UserError(f"{data / 'sequences.parquet'}: item ids outside 0..{n_items - 1}; rebuild the dataset.")
    # padded [rows, max_len] matrix, vectorised
    rows = len(lengths_all)
    padded = np.full((rows, max_len), n_items, dtype=np.int64)
    row_of = np.repeat(np.arange(rows), lengths_all)
    col_of = np.arange(len(flat)) - np.repeat(offsets[:-1], lengths_all)
    padded[row_of, col_of] = flat
    out = {}
    for split in SPLITS:
        mask = np.asarray(pc.equal(split_col, split).to_numpy(zero_copy_only=False), dtype=bool)
        if not mask.any():
            raise UserError(f"{data / 'sequences.parquet'}: split {split!r} is empty; rebuild the dataset.")
        out[split] = SplitData(seq_ids[mask], torch.from_numpy(padded[mask]), torch.from_numpy(lengths_all[mask]),
                               torch.from_numpy(targets[mask]))
    return n_items, max_len, out


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
def _student_params(params: dict, backbone: str) -> tuple[dict, dict]:
    if not isinstance(params, dict) or "student" not in params or "method" not in params:
        raise UserError('params must be {"student": <student config>, "method": <method config incl. type>}')
    s = dict(params["student"])
    unknown = set(s) - STUDENT_KEYS
    if unknown:
        raise UserError(f"student: unknown key(s) {sorted(unknown)}; known: {sorted(STUDENT_KEYS)}")
    bb = s.get("backbone")
    if bb is None:
        bb = (s.get("backbones") or {}).get(backbone, {})
    defaults = {"hidden": 64, "dropout": 0.1, "lr": 1e-3, "batch_size": 256, "weight_decay": 0.0,
                "epochs": 100, "patience": 10, "eval_batch_size": 1024}
    cfg = {k: s.get(k, v) for k, v in defaults.items()}
    return cfg, dict(bb or {})


def _device(device: str, s: dict) -> torch.device:
    want = device if device not in (None, "auto") else s.get("device", "auto")
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
    """Instantiate (student, method) from names and params (used by training and :func:`load_model`)."""
    cfg, bb = _student_params(params, backbone)
    student = get_backbone(backbone)(n_items, hidden=int(cfg["hidden"]), dropout=float(cfg["dropout"]),
                                     max_len=max_len, item_counts=ctx.item_counts, **bb)
    mcfg = dict(params["method"])
    mtype = mcfg.get("type", method)
    meth = get_method(mtype)(mcfg, ctx, student)
    return student, meth


def _fingerprint(*parts) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _on_checkpoint(epoch: int) -> None:
    """Called after each epoch's checkpoint is on disk (tests patch it to simulate a kill)."""


def _save_torch(obj, path: Path) -> None:
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


# --- training --------------------------------------------------------------------------------
def train_student(data: str, backbone: str, method: str, params: dict, seed: int, out: str, work: str,
                  teacher: str | None = None, threads: int | None = None, device: str = "auto") -> dict:
    """Train, select on validation NDCG@20, test once; write out/{model.pt,metrics.json,train_log.csv}.
    Returns the metrics dict."""
    seed = int(seed)
    if isinstance(params, str):
        params = json.loads(params)
    if threads not in (None, "", "None"):
        torch.set_num_threads(int(threads))
    if teacher in ("", "None", "none", "null"):
        teacher = None
    cfg, _ = _student_params(params, backbone)
    dev = _device(device, dict(params["student"]))
    out, work = Path(out), Path(work)

    n_items, max_len, splits = load_sequences(data)
    tr = splits["train"]
    item_counts = torch.bincount(tr.target, minlength=n_items)

    mcfg = dict(params["method"])
    mcls = get_method(mcfg.get("type", method))
    parts = mcls.parse_options(mcfg, method).teacher_parts()  # errors name methods.<method>.<key>
    tt = None
    if parts:
        if teacher is None:
            raise UserError(f"method {method!r} reads the teacher's {sorted(parts)}: pass --teacher DIR")
        from dllm2rec.distill.teacher_data import load_teacher

        which = SPLITS if mcls.uses_teacher_at_inference else ("train",)
        tt = load_teacher(teacher, {s: splits[s].seq_id for s in which}, n_items, parts)

    torch.manual_seed(seed)
    ctx = DistillContext(n_items=n_items, hidden=int(cfg["hidden"]), teacher=tt, item_counts=item_counts,
                         train_history=tr.history, train_lengths=tr.lengths, train_target=tr.target, seed=seed,
                         max_epochs=int(cfg["epochs"]))
    student, meth = build(backbone, method, params, n_items, max_len, ctx)
    student.to(dev)
    meth.to(dev)
    # fused Adam (one kernel over all parameters; CPU and CUDA): same update rule, ~3x less overhead
    opt = torch.optim.Adam(_dedup_params(student, meth), lr=float(cfg["lr"]), weight_decay=float(cfg["weight_decay"]),
                           fused=True)
    gen = torch.Generator().manual_seed(seed)

    dsplits = {s: d.to(dev) for s, d in splits.items()}
    dtr = dsplits["train"]
    epochs, patience, bs = int(cfg["epochs"]), int(cfg["patience"]), int(cfg["batch_size"])
    ebs = int(cfg["eval_batch_size"])

    fp = _fingerprint(params, backbone, method, seed, n_items, max_len, len(tr.target), str(Path(data).resolve()),
                      str(Path(teacher).resolve()) if teacher else None)
    ckpt_path = work / "checkpoint.pt"
    state = {"epoch": 0, "best": None, "bad": 0, "log": [], "train_seconds": 0.0, "stopped": False}
    if ckpt_path.exists():
        ck = torch.load(ckpt_path, map_location="cpu", weights_only=False)
        if ck.get("fingerprint") == fp:
            student.load_state_dict(ck["student"])
            meth.load_state_dict(ck["method"])
            opt.load_state_dict(ck["optimizer"])
            gen.set_state(ck["gen"])
            meth.set_rng_state(ck.get("method_rng"))
            torch.set_rng_state(ck["torch_rng"])
            if dev.type == "cuda" and ck.get("cuda_rng") is not None:
                torch.cuda.set_rng_state_all(ck["cuda_rng"])
            state = ck["state"]
            print(f"resuming from {ckpt_path} after epoch {state['epoch']}", flush=True)
        else:
            print(f"ignoring {ckpt_path}: it was made by another configuration", flush=True)

    while state["epoch"] < epochs and not state["stopped"]:
        epoch = state["epoch"]
        t0 = time.perf_counter()
        student.train()
        meth.train()
        perm = torch.randperm(len(tr.target), generator=gen)
        negs = sample_negatives(tr.history[perm], tr.target[perm], n_items, gen)
        perm_d, negs_d = perm.to(dev), negs.to(dev)
        sums = torch.zeros(3, dtype=torch.float64, device=dev)
        for start in range(0, len(perm), bs):
            rows = perm_d[start:start + bs]
            batch = Batch("train", rows, dtr.history[rows], dtr.lengths[rows], dtr.target[rows], negs_d[start:start + bs])
            table = meth.item_table_for(student, batch.history)
            st = meth.adjust_state(student.encode(batch.history, batch.lengths, table), batch)
            scores = student.scores(st)
            rec = student.rec_loss(scores, batch.target, batch.negative)
            dist = meth.loss(batch, scores, st, student, epoch)
            loss = rec + dist
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sums += torch.stack([loss.detach(), rec.detach(), torch.as_tensor(dist).detach()]).double() * len(rows)
        sums = (sums / len(perm)).tolist()
        if dev.type == "cuda":
            torch.cuda.synchronize()
        if not all(np.isfinite(sums)):
            raise UserError(f"training diverged at epoch {epoch + 1} (loss {sums[0]}); lower the learning rate "
                            "or lambda_d")
        seconds = time.perf_counter() - t0
        valid = evaluate(student, meth, "valid", dsplits["valid"].history, dsplits["valid"].lengths,
                         dsplits["valid"].target, ebs)
        valid_seconds = time.perf_counter() - t0 - seconds
        state["train_seconds"] += seconds + valid_seconds
        state["log"].append({"epoch": epoch + 1, "loss": sums[0], "rec_loss": sums[1], "distill_loss": sums[2],
                             "valid_HR@20": valid["HR@20"], "valid_NDCG@20": valid["NDCG@20"], "seconds": seconds,
                             "valid_seconds": valid_seconds})
        print(f"epoch {epoch + 1}: loss {sums[0]:.4f} (rec {sums[1]:.4f}, distill {sums[2]:.4f}) "
              f"valid HR@20 {valid['HR@20']:.4f} NDCG@20 {valid['NDCG@20']:.4f} ({seconds:.1f}s)", flush=True)
        best = state["best"]
        if best is None or valid["NDCG@20"] > best["valid"]["NDCG@20"]:
            state["best"] = {"epoch": epoch + 1, "valid": valid,
                             "student": copy.deepcopy({k: v.cpu() for k, v in student.state_dict().items()}),
                             "method": copy.deepcopy({k: v.cpu() for k, v in meth.state_dict().items()})}
            state["bad"] = 0
        else:
            state["bad"] += 1
        state["epoch"] = epoch + 1
        state["stopped"] = state["bad"] >= patience
        _save_torch({"fingerprint": fp, "student": student.state_dict(), "method": meth.state_dict(),
                     "optimizer": opt.state_dict(), "gen": gen.get_state(), "torch_rng": torch.get_rng_state(),
                     "method_rng": meth.rng_state(),
                     "cuda_rng": torch.cuda.get_rng_state_all() if dev.type == "cuda" else None,
                     "state": state}, ckpt_path)
        _on_checkpoint(epoch + 1)

    # --- the selected checkpoint, tested once ------------------------------------------------
    best = state["best"]
    student.load_state_dict(best["student"])
    meth.load_state_dict(best["method"])
    t0 = time.perf_counter()
    test = evaluate(student, meth, "test", dsplits["test"].history, dsplits["test"].lengths, dsplits["test"].target, ebs)
    inference_seconds = time.perf_counter() - t0
    metrics = {"valid": best["valid"], "test": test, "best_epoch": best["epoch"], "epochs_run": state["epoch"],
               "train_seconds": state["train_seconds"], "inference_seconds": inference_seconds,
               "backbone": backbone, "method": method, "seed": seed,
               "n_params": sum(p.numel() for p in _dedup_params(student, meth))}
    student.eval()
    meth.eval()
    with torch.no_grad():
        table = meth.item_table(student).detach().cpu()
    model = {"format": FORMAT, "backbone": backbone, "method": method, "method_type": mcfg.get("type", method),
             "n_items": n_items, "max_len": max_len, "params": params, "seed": seed, "best_epoch": best["epoch"],
             "student_state": {k: v.cpu() for k, v in student.state_dict().items()},
             "method_state": {k: v.cpu() for k, v in meth.state_dict().items()},
             "item_table": table, "uses_teacher_at_inference": bool(meth.uses_teacher_at_inference)}
    out.mkdir(parents=True, exist_ok=True)
    _save_torch(model, out / "model.pt")
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=LOG_FIELDS, lineterminator="\n")
    w.writeheader()
    w.writerows(state["log"])
    with atomic_path(out / "train_log.csv") as tmp:
        tmp.write_text(buf.getvalue())
    write_json(metrics, out / "metrics.json")
    ckpt_path.unlink(missing_ok=True)
    return metrics


def load_model(path, device: str = "cpu"):
    """``(student, item_table)`` from a model.pt, ready for inference without the teacher:
    ``student.scores(student.encode(history, lengths, item_table))`` (methods that use the teacher
    at inference, KAR / LLM-CF, also need their ``adjust_state``)."""
    m = torch.load(path, map_location=device, weights_only=False)
    if m.get("format") != FORMAT:
        raise UserError(f"{path}: not a dllm2rec student model")
    cfg, bb = _student_params(m["params"], m["backbone"])
    student = get_backbone(m["backbone"])(m["n_items"], hidden=int(cfg["hidden"]), dropout=float(cfg["dropout"]),
                                          max_len=m["max_len"], **bb)
    student.load_state_dict(m["student_state"])
    student.eval()
    return student, m["item_table"]
