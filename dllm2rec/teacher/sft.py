"""BIGRec supervised fine-tuning: LoRA on the base model, a plain loop over accelerate.

The same code runs on CPU (fp32), one GPU (bf16 weights, bf16 autocast) and several GPUs
(``accelerate launch -m dllm2rec sft ...``: data-parallel, the effective batch is kept).

- Examples: a seeded sample of ``train_samples`` train sequences and ``valid_samples`` valid
  sequences; each is prompt + quoted target title + EOS, oldest titles dropped to fit
  ``cutoff_len``. The loss covers every token (BIGRec trains on inputs), padding excluded; it
  is transformers' causal-LM loss, computed without materialising the logits
  (:mod:`dllm2rec.teacher.lm_loss`).
- Optimisation: AdamW, linear warm-up for ``warmup_steps`` then linear decay over all
  ``epochs``; ``batch_size`` is the effective batch, reached by gradient accumulation of
  ``micro_batch_size`` examples per device.
- Early stopping on the token-mean validation loss, evaluated after every epoch; ``patience``
  epochs without improvement stop it (the epoch loop of :mod:`dllm2rec.epochs`, the students'
  too; the curve is the loop's ``log``). The best *trained* adapter is kept (as BIGRec's Trainer
  with ``load_best_model_at_end`` keeps the best of its per-epoch evaluations): the loss before
  training (epoch 0, the untrained adapter) is recorded in the curve as a reference only, and is
  never the adapter kept, even when every epoch's loss is higher.
- ``work`` holds a checkpoint after every epoch (adapter, optimiser, scheduler, RNG, loss
  curve); a killed run resumes from the last finished epoch, but only if the checkpoint was made
  from the same params, base model pointer, dataset *content* and package code
  (:func:`dllm2rec.resume.job_fingerprint`). ``out`` receives the best adapter plus
  ``teacher_sft.json`` (the config that made it and the loss curve), atomically; then the work
  folder's checkpoint and best adapter are deleted, so a finished SFT leaves nothing to resume.
- The log is flushed as it goes: one line per optimiser step (loss, learning rate, ETA), one
  per epoch, and ``killed by SIGTERM at ...`` when the job is cancelled.
"""
from __future__ import annotations

import json
import math
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from dllm2rec import epochs, resume
from dllm2rec import dataset as ds
from dllm2rec.io import atomic_path, progress, read_json
from dllm2rec.layout import SFT_BEST, SFT_INFO
from dllm2rec.settings import teacher_dtype
from dllm2rec.teacher.prompts import encode_example, item_titles


def sample_examples(dataset: ds.Dataset, split: str, n: int, seed: int) -> tuple[list, list]:
    """A seeded sample (without replacement, in seq_id order) of ``split``: (histories, targets)."""
    rows = dataset.split(split, by_seq_id=True)
    take = np.arange(rows.num_rows)
    if n < rows.num_rows:
        take = np.sort(np.random.default_rng(seed).choice(rows.num_rows, size=n, replace=False))
    rows = rows.take(take)
    return ds.histories(rows), ds.targets(rows).tolist()


def encode_split(tokenizer, titles, histories, targets, noun, cutoff_len):
    encoded = [encode_example(tokenizer, [titles[i] for i in h], noun, cutoff_len, target=titles[t])
               for h, t in zip(histories, targets)]
    return [ids for ids, _ in encoded], sum(1 for _, d in encoded if d)


def collate(batch: list[list[int]], pad_id: int):
    """Right-padded input_ids, attention_mask and labels (-100 on padding)."""
    import torch

    width = max(len(x) for x in batch)
    ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    for row, x in enumerate(batch):
        ids[row, :len(x)] = torch.tensor(x)
        mask[row, :len(x)] = 1
    labels = ids.masked_fill(mask == 0, -100)
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def evaluate(model, loader, accelerator) -> float:
    """Token-mean loss over ``loader`` (all processes)."""
    import torch

    from dllm2rec.teacher.lm_loss import token_loss

    model.eval()
    total = torch.zeros(2, dtype=torch.float64, device=accelerator.device)
    with torch.no_grad():
        for batch in loader:
            loss = token_loss(model, batch)
            n = (batch["labels"][:, 1:] != -100).sum()
            total += torch.stack([loss.double() * n, n.double()])
    total = accelerator.reduce(total, reduction="sum")
    model.train()
    return float(total[0] / total[1].clamp(min=1))


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m" if seconds >= 3600 else f"{seconds // 60}m{seconds % 60:02d}s"


def sft_fingerprint(params: dict, base, noun: str, data) -> str:
    """What an SFT checkpoint is keyed by (:func:`dllm2rec.resume.job_fingerprint`): the config,
    the dataset's files, the base model's pointer and its folder's *content* (weights by size and
    modification time), so a checkpoint made on another model at the same path is not resumed."""
    from dllm2rec.teacher.model import resolve_base

    data_files = [ds.paths(data)[part] for part in ("items", "sequences")]
    return resume.job_fingerprint({"params": params, "base": str(base), "noun": noun},
                                  [*data_files, base if Path(base).is_file() else None, resolve_base(base)])


@dataclass
class SFTRun:
    """Everything one SFT works with, built by :func:`_prepare`."""

    accelerator: object
    model: object  # the peft model, prepared by accelerate
    unwrapped: object  # the same, unwrapped (what is saved)
    optimizer: object
    scheduler: object
    train_loader: object
    valid_loader: object
    gen: object  # the train loader's shuffling generator
    seed: int
    n_epochs: int
    ga: int  # gradient accumulation steps
    total_steps: int
    sizes: dict  # n_train, n_valid, n_truncated
    best_dir: Path  # the best adapter so far (work/SFT_BEST)
    # the epoch loop's state (dllm2rec.epochs; its log is the curve) plus the optimiser step
    state: dict = field(default_factory=lambda: epochs.new_state(step=0))
    t_start: float = field(default_factory=time.time)
    run_steps: int = 0  # optimiser steps taken by this process (for the ETA)

    def log(self, msg: str) -> None:
        if self.accelerator.is_main_process:
            progress(msg)  # the log, and the terminal inside the rule


def _prepare(base: str, data: str, params: dict, noun: str, work: Path) -> SFTRun:
    """The accelerator, the examples, the base model with a fresh LoRA adapter, the loaders,
    optimiser and scheduler."""
    import torch
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState
    from accelerate.utils import set_seed
    from peft import LoraConfig, get_peft_model
    from torch.utils.data import DataLoader
    from transformers import get_linear_schedule_with_warmup

    from dllm2rec.teacher.model import load_base, resolve_dtype

    sft, lora = params["sft"], params["lora"]
    seed = int(sft["seed"])
    dtype = resolve_dtype(teacher_dtype(params), "cuda" if torch.cuda.is_available() else "cpu")
    micro = int(sft["micro_batch_size"])
    AcceleratorState._reset_state()  # an earlier in-process run may have fixed another precision
    accelerator = Accelerator(mixed_precision={torch.bfloat16: "bf16", torch.float16: "fp16"}.get(dtype, "no"))
    ga = max(1, int(sft["batch_size"]) // (micro * accelerator.num_processes))
    accelerator.gradient_accumulation_steps = ga
    work.mkdir(parents=True, exist_ok=True)

    dataset = ds.load_dataset(data)
    dataset.require_titles()  # a UserError for a source without titles
    titles = item_titles(dataset.items)  # prompts and targets use the normalised titles
    model, tokenizer = load_base(base, device=str(accelerator.device), dtype=dtype)
    cutoff = int(sft["cutoff_len"])
    train_ids, train_trunc = encode_split(tokenizer, titles, *sample_examples(dataset, "train", int(sft["train_samples"]), seed), noun, cutoff)
    valid_ids, valid_trunc = encode_split(tokenizer, titles, *sample_examples(dataset, "valid", int(sft["valid_samples"]), seed), noun, cutoff)

    set_seed(seed)
    model.config.use_cache = False
    model = get_peft_model(model, LoraConfig(
        r=int(lora["r"]), lora_alpha=int(lora["alpha"]), lora_dropout=float(lora["dropout"]),
        target_modules=list(lora["target_modules"]), bias="none", task_type="CAUSAL_LM"))
    if accelerator.is_main_process:
        progress(f"sft: {len(train_ids)} train / {len(valid_ids)} valid examples ({train_trunc} + {valid_trunc} "
                 f"truncated), micro batch {micro} x {ga} accumulation x {accelerator.num_processes} processes, "
                 f"device {accelerator.device}")

    pad = tokenizer.pad_token_id
    gen = torch.Generator().manual_seed(seed)
    train_loader = DataLoader(train_ids, batch_size=micro, shuffle=True, generator=gen, collate_fn=lambda b: collate(b, pad))
    valid_loader = DataLoader(valid_ids, batch_size=micro, shuffle=False, collate_fn=lambda b: collate(b, pad))
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=float(sft["lr"]), weight_decay=0.0)
    model, optimizer, train_loader, valid_loader = accelerator.prepare(model, optimizer, train_loader, valid_loader)
    steps_per_epoch = math.ceil(len(train_loader) / ga)
    n_epochs = int(sft["epochs"])
    scheduler = get_linear_schedule_with_warmup(optimizer, int(sft["warmup_steps"]), max(1, steps_per_epoch * n_epochs))
    return SFTRun(accelerator, model, accelerator.unwrap_model(model), optimizer, scheduler, train_loader, valid_loader,
                  gen, seed, n_epochs, ga, steps_per_epoch * n_epochs,
                  {"n_train": len(train_ids), "n_valid": len(valid_ids), "n_truncated": train_trunc + valid_trunc},
                  work / SFT_BEST)


def _resume(run: SFTRun, loop: epochs.EpochLoop) -> None:
    """Continue from the work folder's checkpoint (and best adapter) when this same SFT made them."""
    import torch
    from peft import set_peft_model_state_dict

    def restore(ck: dict) -> None:
        set_peft_model_state_dict(run.unwrapped, ck["adapter"])
        run.optimizer.load_state_dict(ck["optimizer"])
        run.scheduler.load_state_dict(ck["scheduler"])
        torch.set_rng_state(ck["rng"])

    if run.best_dir.exists():
        run.state = loop.resume(restore) or run.state


def _train_epoch(run: SFTRun, epoch: int) -> float:
    """One pass over the train examples (the epoch's own shuffle), one log line per optimiser step;
    the mean micro-batch loss (:func:`dllm2rec.teacher.lm_loss.token_loss`: transformers' loss
    without the vocabulary-wide logits)."""
    from dllm2rec.teacher.lm_loss import token_loss

    accelerator, model, state = run.accelerator, run.model, run.state
    run.gen.manual_seed(run.seed + epoch)  # the epoch's shuffle does not depend on where a run resumed
    losses = []
    for batch in run.train_loader:
        with accelerator.accumulate(model):
            loss = token_loss(model, batch)
            accelerator.backward(loss)
            losses.append(loss.item())
            if accelerator.sync_gradients:
                run.optimizer.step()
                run.scheduler.step()
                run.optimizer.zero_grad()
                state["step"] += 1
                run.run_steps += 1
                per_step = (time.time() - run.t_start) / run.run_steps
                eta = per_step * (run.total_steps - state["step"])
                run.log(f"sft: epoch {epoch}/{run.n_epochs} step {state['step']}/{run.total_steps} loss {losses[-1]:.4f} "
                        f"lr {run.scheduler.get_last_lr()[0]:.2e} {per_step:.1f}s/step, ETA {_duration(eta)}")
    return float(np.mean(losses)) if losses else float("nan")


def _fit(run: SFTRun, loop: epochs.EpochLoop) -> None:
    """The untrained adapter's validation loss (epoch 0, a reference never kept), then the epochs
    (:meth:`dllm2rec.epochs.EpochLoop.run`), the best adapter saved as it improves."""
    import torch
    from peft import get_peft_model_state_dict

    state = run.state
    if not state["log"]:  # epoch 0: the untrained adapter's loss, a reference (never kept)
        loss0 = evaluate(run.model, run.valid_loader, run.accelerator)
        state["log"].append({"epoch": 0, "step": 0, "train_loss": None, "eval_loss": loss0, "lr": 0.0, "seconds": 0.0})
        run.log(f"sft: epoch 0 (untrained) eval loss {loss0:.4f}")
    run.model.train()

    def train_epoch(epoch: int):
        t0 = time.time()
        train_loss = _train_epoch(run, epoch)
        eval_loss = evaluate(run.model, run.valid_loader, run.accelerator)
        row = {"epoch": epoch, "step": state["step"], "train_loss": train_loss, "eval_loss": eval_loss,
               "lr": run.scheduler.get_last_lr()[0], "seconds": time.time() - t0}
        return row, eval_loss, None  # the first trained epoch is the first best

    def keep(epoch: int, _) -> None:
        if run.accelerator.is_main_process:
            with atomic_path(run.best_dir, is_dir=True) as tmp:
                run.unwrapped.save_pretrained(tmp)

    def describe(epoch: int, row: dict) -> str:
        return (f"epoch {epoch}/{run.n_epochs} train loss {row['train_loss']:.4f} eval loss {row['eval_loss']:.4f} "
                f"({row['seconds']:.1f}s)")  # the loop's log adds "sft: "

    def checkpoint() -> None:
        if run.accelerator.is_main_process:
            loop.checkpoint(state, {"adapter": get_peft_model_state_dict(run.unwrapped),
                                    "optimizer": run.optimizer.state_dict(), "scheduler": run.scheduler.state_dict(),
                                    "rng": torch.get_rng_state()})
        run.accelerator.wait_for_everyone()

    loop.run(state, train_epoch, keep, describe, checkpoint)


def _write_adapter(run: SFTRun, out: Path, base: str, data: str, params: dict, noun: str, work: Path) -> None:
    """The best adapter and teacher_sft.json (the config that made it, the curve) to ``out``,
    atomically; then the work folder's checkpoint and best adapter are deleted."""
    state = run.state
    if run.accelerator.is_main_process:
        with atomic_path(out, is_dir=True) as tmp:
            shutil.copytree(run.best_dir, tmp, dirs_exist_ok=True)
            (tmp / SFT_INFO).write_text(json.dumps({
                "base": str(base), "base_info": read_json(base) if str(base).endswith(".json") else None,
                "data": str(data), "noun": noun, "params": params, **run.sizes,
                "processes": run.accelerator.num_processes, "gradient_accumulation": run.ga,
                "best_epoch": state["best_epoch"], "best_eval_loss": state["best_score"],
                "stopped_early": state["epoch"] < run.n_epochs, "curve": state["log"],
                "seconds_this_run": time.time() - run.t_start,
            }, indent=2, sort_keys=True) + "\n")
        resume.remove_checkpoint(work)  # finished: nothing is left to resume
        shutil.rmtree(run.best_dir, ignore_errors=True)
        run.log(f"sft: done, best epoch {state['best_epoch']} (eval loss {state['best_score']:.4f}), "
                f"{time.time() - run.t_start:.0f}s; adapter in {out}")
    run.accelerator.wait_for_everyone()


def train_adapter(base: str, data: str, params: dict, noun: str, out: str, work: str) -> None:
    """LoRA SFT of ``base`` on ``data``; the best adapter and its config/curve go to ``out``.
    Its steps: :func:`_prepare`, :func:`_resume`, :func:`_fit` (:func:`_train_epoch`, validation,
    keeping the best adapter, a checkpoint per epoch), :func:`_write_adapter`."""
    work, out = Path(work), Path(out)
    run = _prepare(base, data, params, noun, work)
    loop = epochs.EpochLoop(work, sft_fingerprint(params, base, noun, data), run.n_epochs, int(params["sft"]["patience"]),
                            "eval loss", higher_is_better=False, log=lambda msg: run.log(f"sft: {msg}"))
    _resume(run, loop)

    def where() -> str:
        return f"epoch {run.state['epoch'] + 1}/{run.n_epochs}, step {run.state['step']}/{run.total_steps}"

    with resume.report_kill(where, run.log):  # a cancelled job says where it was
        _fit(run, loop)
    _write_adapter(run, out, base, data, params, noun, work)
