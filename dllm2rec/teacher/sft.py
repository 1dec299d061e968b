"""BIGRec supervised fine-tuning: LoRA on the base model, a plain loop over accelerate.

The same code runs on CPU (fp32), one GPU (bf16 weights, bf16 autocast) and several GPUs
(``accelerate launch -m dllm2rec sft ...``: data-parallel, the effective batch is kept).

- Examples: a seeded sample of ``train_samples`` train sequences and ``valid_samples`` valid
  sequences; each is prompt + quoted target title + EOS, oldest titles dropped to fit
  ``cutoff_len``. The loss covers every token (BIGRec trains on inputs), padding excluded.
- Optimisation: AdamW, linear warm-up for ``warmup_steps`` then linear decay over all
  ``epochs``; ``batch_size`` is the effective batch, reached by gradient accumulation of
  ``micro_batch_size`` examples per device.
- Early stopping on the token-mean validation loss, evaluated after every epoch; ``patience``
  epochs without improvement stop it. The best *trained* adapter is kept (as BIGRec's Trainer
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
from pathlib import Path

import numpy as np

from dllm2rec import resume
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

    model.eval()
    total = torch.zeros(2, dtype=torch.float64, device=accelerator.device)
    with torch.no_grad():
        for batch in loader:
            out = model(**batch)
            n = (batch["labels"][:, 1:] != -100).sum()
            total += torch.stack([out.loss.double() * n, n.double()])
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


def train_adapter(base: str, data: str, params: dict, noun: str, out: str, work: str) -> None:
    """LoRA SFT of ``base`` on ``data``; the best adapter and its config/curve go to ``out``."""
    import torch
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState
    from accelerate.utils import set_seed
    from peft import (
        LoraConfig,
        get_peft_model,
        get_peft_model_state_dict,
        set_peft_model_state_dict,
    )
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
    work, out = Path(work), Path(out)
    work.mkdir(parents=True, exist_ok=True)

    def log(msg: str) -> None:
        if accelerator.is_main_process:
            progress(msg)  # the log, and the terminal inside the rule

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
    log(f"sft: {len(train_ids)} train / {len(valid_ids)} valid examples ({train_trunc} + {valid_trunc} truncated), "
        f"micro batch {micro} x {ga} accumulation x {accelerator.num_processes} processes, device {accelerator.device}")

    pad = tokenizer.pad_token_id
    gen = torch.Generator().manual_seed(seed)
    train_loader = DataLoader(train_ids, batch_size=micro, shuffle=True, generator=gen, collate_fn=lambda b: collate(b, pad))
    valid_loader = DataLoader(valid_ids, batch_size=micro, shuffle=False, collate_fn=lambda b: collate(b, pad))
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=float(sft["lr"]), weight_decay=0.0)
    model, optimizer, train_loader, valid_loader = accelerator.prepare(model, optimizer, train_loader, valid_loader)
    steps_per_epoch = math.ceil(len(train_loader) / ga)
    epochs = int(sft["epochs"])
    scheduler = get_linear_schedule_with_warmup(optimizer, int(sft["warmup_steps"]), max(1, steps_per_epoch * epochs))

    fingerprint = sft_fingerprint(params, base, noun, data)
    best_dir = work / SFT_BEST
    state = {"epoch": 0, "step": 0, "best_loss": None, "best_epoch": 0, "bad_epochs": 0, "curve": []}
    unwrapped = accelerator.unwrap_model(model)
    ckpt = resume.load_checkpoint(work, fingerprint, log=lambda msg: log(f"sft: {msg}")) if best_dir.exists() else None
    if ckpt is not None:
        set_peft_model_state_dict(unwrapped, ckpt["adapter"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        torch.set_rng_state(ckpt["rng"])
        state = ckpt["state"]
        log(f"sft: resumed from {resume.checkpoint_path(work)} after epoch {state['epoch']}")

    def save_best():
        if accelerator.is_main_process:
            with atomic_path(best_dir, is_dir=True) as tmp:
                unwrapped.save_pretrained(tmp)

    def checkpoint():
        if accelerator.is_main_process:
            resume.save_checkpoint(work, fingerprint, {
                "adapter": get_peft_model_state_dict(unwrapped), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(), "rng": torch.get_rng_state(), "state": state})
        accelerator.wait_for_everyone()

    t_start = time.time()
    total_steps = steps_per_epoch * epochs
    run_steps = {"done": 0}  # optimiser steps taken by this process (for the ETA)

    def where() -> str:
        return f"epoch {state['epoch'] + 1}/{epochs}, step {state['step']}/{total_steps}"

    with resume.report_kill(where, log):  # a cancelled job says where it was
        if not state["curve"]:  # epoch 0: the untrained adapter's loss, a reference (never kept)
            loss0 = evaluate(model, valid_loader, accelerator)
            state["curve"].append({"epoch": 0, "step": 0, "train_loss": None, "eval_loss": loss0, "lr": 0.0, "seconds": 0.0})
            log(f"sft: epoch 0 (untrained) eval loss {loss0:.4f}")

        model.train()
        while state["epoch"] < epochs and state["bad_epochs"] < int(sft["patience"]):
            epoch = state["epoch"] + 1
            gen.manual_seed(seed + epoch)  # the epoch's shuffle does not depend on where a run resumed
            t0, losses = time.time(), []
            for batch in train_loader:
                with accelerator.accumulate(model):
                    loss = model(**batch).loss
                    accelerator.backward(loss)
                    losses.append(loss.item())
                    if accelerator.sync_gradients:
                        optimizer.step()
                        scheduler.step()
                        optimizer.zero_grad()
                        state["step"] += 1
                        run_steps["done"] += 1
                        per_step = (time.time() - t_start) / run_steps["done"]
                        eta = per_step * (total_steps - state["step"])
                        log(f"sft: epoch {epoch}/{epochs} step {state['step']}/{total_steps} loss {losses[-1]:.4f} "
                            f"lr {scheduler.get_last_lr()[0]:.2e} {per_step:.1f}s/step, ETA {_duration(eta)}")
            eval_loss = evaluate(model, valid_loader, accelerator)
            train_loss = float(np.mean(losses)) if losses else float("nan")
            state["epoch"] = epoch
            state["curve"].append({"epoch": epoch, "step": state["step"], "train_loss": train_loss, "eval_loss": eval_loss,
                                   "lr": scheduler.get_last_lr()[0], "seconds": time.time() - t0})
            if state["best_loss"] is None or eval_loss < state["best_loss"]:  # the first trained epoch is the first best
                state.update(best_loss=eval_loss, best_epoch=epoch, bad_epochs=0)
                save_best()
            else:
                state["bad_epochs"] += 1
            log(f"sft: epoch {epoch}/{epochs} train loss {train_loss:.4f} eval loss {eval_loss:.4f} "
                f"(best {state['best_loss']:.4f} @ {state['best_epoch']}) {time.time() - t0:.1f}s")
            checkpoint()

    if accelerator.is_main_process:
        with atomic_path(out, is_dir=True) as tmp:
            shutil.copytree(best_dir, tmp, dirs_exist_ok=True)
            (tmp / SFT_INFO).write_text(json.dumps({
                "base": str(base), "base_info": read_json(base) if str(base).endswith(".json") else None,
                "data": str(data), "noun": noun, "params": params, "n_train": len(train_ids), "n_valid": len(valid_ids),
                "n_truncated": train_trunc + valid_trunc, "processes": accelerator.num_processes,
                "gradient_accumulation": ga, "best_epoch": state["best_epoch"], "best_eval_loss": state["best_loss"],
                "stopped_early": state["epoch"] < epochs, "curve": state["curve"],
                "seconds_this_run": time.time() - t_start,
            }, indent=2, sort_keys=True) + "\n")
        resume.remove_checkpoint(work)  # finished: nothing is left to resume
        shutil.rmtree(best_dir, ignore_errors=True)
        log(f"sft: done, best epoch {state['best_epoch']} (eval loss {state['best_loss']:.4f}), "
            f"{time.time() - t_start:.0f}s; adapter in {out}")
    accelerator.wait_for_everyone()
