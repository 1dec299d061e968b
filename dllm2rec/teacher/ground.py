"""Grounding (docs/method.md §2, paper Eq. 4): texts -> last-layer last-token embeddings -> nearest items.

A text's embedding is the final hidden state (after the last norm) of its last token, taken
from the **base** model (no LoRA), exactly as BIGRec does. Batches are padded on the left and
given explicit position ids, so an embedding does not depend on which batch it was in.
Distances are **squared** L2, ``d_si = ||z_gs - z_i||^2`` as Eq. 4 and Eq. 7 write it (the
ranking is the same as with plain L2; the values feed the confidence weights of Eq. 7).

Optional second grounding step (BIGRec's popularity injection, ``grounding.popularity_gamma``,
off at 0): items are ranked by ``(1 + p_i)^(-gamma) * dn_si`` instead of the distance, where
``dn_si`` is the plain L2 distance min-max scaled to [0, 1] over the items of each query and
``p_i`` is the item's popularity (its count as a training target) min-max scaled to [0, 1] over
the items; as in SAI990323/BIGRec data/movie/adjust_pda.py (``torch.pow((1 + pop_rank), -gamma) *
dist`` on min-max-normalised ``cdist`` distances), where gamma is chosen on validation.
"""
from __future__ import annotations

import numpy as np

from dllm2rec import teacher_artifacts as ta
from dllm2rec.dataset import load_dataset
from dllm2rec.io import ProgressStream, UserError, write_parquet
from dllm2rec.settings import teacher_dtype
from dllm2rec.teacher.model import causal_lm
from dllm2rec.teacher.prompts import item_titles


MAX_TEXT_TOKENS = 512


def transformer_body(model):
    """The transformer of a causal LM without its language-model head (``LlamaModel`` inside
    ``LlamaForCausalLM``; through a PeftModel, whose LoRA layers stay in place): its
    ``last_hidden_state`` is the final hidden state after the last norm, and no vocabulary-wide
    logits are computed. (Through a PeftModel in bf16 on the CPU, the LM head of even one
    position per text ran as a batched matmul over a copy of its weight expanded per text,
    ``[64, 576, 49152]`` for the default's batch: ten times the cost of the embedding itself,
    docs/benchmarks.md.)"""
    inner = causal_lm(model)
    return getattr(inner, "base_model", inner)


def embed_texts(model, tokenizer, texts: list[str], batch_size: int, desc: str | None = None) -> np.ndarray:
    """float32 [len(texts), hidden]: last-layer hidden state of each text's last token.

    Texts are batched by token length. An empty text (an empty generation) is embedded as the
    single EOS token, so it still gets a (poor) grounding instead of failing. The model's body
    runs without its LM head (:func:`transformer_body`).
    """
    import torch
    from tqdm.auto import tqdm

    fallback = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else tokenizer.pad_token_id
    # at most MAX_TEXT_TOKENS per text (the data stage caps titles at MAX_TITLE_CHARS characters
    # already; generated texts are max_new_tokens long): one long text never sets a batch's memory
    ids = [tokenizer(t)["input_ids"][:MAX_TEXT_TOKENS] if t else [] for t in texts]
    ids = [x if x else [fallback] for x in ids]
    order = sorted(range(len(ids)), key=lambda i: (len(ids[i]), i))
    hidden = model.config.hidden_size if hasattr(model, "config") else None
    out = np.zeros((len(texts), hidden or 0), dtype=np.float32)
    device = next(model.parameters()).device
    pad = tokenizer.pad_token_id
    body = transformer_body(model)
    bar = tqdm(total=len(texts), desc=desc, unit="text", disable=desc is None, mininterval=5, file=ProgressStream())
    with torch.inference_mode():
        for start in range(0, len(order), batch_size):
            idx = order[start:start + batch_size]
            width = max(len(ids[i]) for i in idx)
            input_ids = torch.full((len(idx), width), pad, dtype=torch.long)
            mask = torch.zeros((len(idx), width), dtype=torch.long)
            for row, i in enumerate(idx):
                input_ids[row, width - len(ids[i]):] = torch.tensor(ids[i])
                mask[row, width - len(ids[i]):] = 1
            positions = (mask.cumsum(-1) - 1).clamp(min=0)
            res = body(input_ids=input_ids.to(device), attention_mask=mask.to(device),
                       position_ids=positions.to(device))
            last = res.last_hidden_state[:, -1, :].float().cpu().numpy()
            if out.shape[1] != last.shape[1]:
                out = np.zeros((len(texts), last.shape[1]), dtype=np.float32)
            out[idx] = last
            bar.update(len(idx))
    bar.close()
    return out


def item_popularity(train_targets, n_items: int) -> np.ndarray:
    """float32 [n_items]: each item's count as a training target, min-max scaled to [0, 1]
    (BIGRec's ``pop_rank``; all zeros when every item is equally popular)."""
    counts = np.bincount(np.asarray(train_targets, dtype=np.int64), minlength=n_items)[:n_items].astype(np.float64)
    span = counts.max() - counts.min() if n_items else 0.0
    return ((counts - counts.min()) / span if span > 0 else np.zeros(n_items)).astype(np.float32)


def nearest_items(queries, items, topn: int, targets=None, chunk: int = 256, popularity=None, gamma: float = 0.0):
    """Squared-L2 nearest items for each query row.

    ``queries`` [m, d] and ``items`` [n, d] are tensors on one device. Returns numpy
    ``topk_items`` int32 [m, N], ``topk_dist`` float32 [m, N] (N = min(topn, n), ascending,
    ties broken by item id) and, with ``targets`` (item ids), ``target_dist`` float32 [m].

    With ``gamma`` > 0 and ``popularity`` ([n] in [0, 1], see :func:`item_popularity`) the
    items are ranked by BIGRec's popularity-adjusted score (module docstring) instead;
    ``topk_dist`` still holds each listed item's squared L2 distance (then not ascending).
    """
    import torch

    n = items.shape[0]
    k = min(int(topn), n)
    items = items.float()
    item_sq = (items * items).sum(-1)
    gamma = float(gamma or 0.0)
    if gamma > 0:
        if popularity is None or len(popularity) != n:
            raise UserError(f"popularity grounding needs one popularity value per item ({n} items)")
        pop_factor = torch.pow(1.0 + torch.as_tensor(np.asarray(popularity), dtype=torch.float32,
                                                     device=items.device), -gamma)
    top_i, top_d, tgt = [], [], []
    for s in range(0, queries.shape[0], chunk):
        q = queries[s:s + chunk].to(items.device).float()
        d = (q * q).sum(-1, keepdim=True) + item_sq[None, :] - 2.0 * q @ items.T
        d = d.clamp_(min=0.0)
        if gamma > 0:
            l2 = d.sqrt()
            low, high = l2.min(-1, keepdim=True).values, l2.max(-1, keepdim=True).values
            score = (l2 - low) / (high - low).clamp(min=1e-12) * pop_factor[None, :]
            order = torch.sort(score, dim=-1, stable=True).indices[:, :k]
            dist = d.gather(1, order)
        else:
            dist, order = torch.sort(d, dim=-1, stable=True)
        top_i.append(order[:, :k].cpu())
        top_d.append(dist[:, :k].cpu())
        if targets is not None:
            t = torch.tensor(np.array(targets[s:s + chunk]), dtype=torch.long, device=d.device)
            tgt.append(d.gather(1, t[:, None])[:, 0].cpu())
    top_items = torch.cat(top_i).numpy().astype(np.int32) if top_i else np.zeros((0, k), np.int32)
    top_dist = torch.cat(top_d).numpy().astype(np.float32) if top_d else np.zeros((0, k), np.float32)
    target_dist = (torch.cat(tgt).numpy().astype(np.float32) if tgt else np.zeros(0, np.float32)) if targets is not None else None
    return top_items, top_dist, target_dist


def embed_items(base: str, data: str, params: dict, out: str) -> None:
    """Every item title embedded by the base model -> ``out`` (the teacher artifacts contract)."""
    import time

    from dllm2rec.teacher.model import load_base

    dataset = load_dataset(data)
    dataset.require_titles()  # a UserError for a source without titles
    titles = item_titles(dataset.items)  # normalised as the generations are (prompts.normalize_title)
    model, tokenizer = load_base(base, dtype=teacher_dtype(params))
    t0 = time.time()
    emb = embed_texts(model, tokenizer, titles, int(params["grounding"]["batch_size"]), desc="item titles")
    table = ta.item_embeddings_table(np.arange(len(titles)), emb)
    write_parquet(table, out, metadata=ta.embedding_metadata(model.config.hidden_size, seconds=time.time() - t0,
                                                             base=str(base), n_items=len(titles), dim=int(emb.shape[1]),
                                                             dataset=dataset.name,
                                                             dataset_fingerprint=dataset.fingerprint))
