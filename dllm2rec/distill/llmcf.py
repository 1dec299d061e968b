"""LLM-CF (Sun et al. CIKM 2024, "Large Language Models Enhanced Collaborative Filtering").

LLM-CF builds, offline, a base of LLM generations for training examples and, for each example
(train or test), retrieves the generations of the most similar *training* examples as
in-context knowledge; an in-context module turns them into a feature added to the
recommender's representation. Here:

- base: the teacher's generated-text embeddings g_t of the train sequences (BIGRec generates a
  title, not a chain of thought; its grounding embedding stands for the CoT embedding);
- similarity (student-free, no teacher call for the query): cosine between history
  signatures k_s = normalise( mean_{i in history} P z~_i ), z~ the standardised teacher title
  embeddings, P their top-``retrieval_dim`` principal directions (seeded; identity when d_t is
  smaller);
- leakage: a train sequence never retrieves itself, nor a train sequence whose history holds
  the bigram (its last history item, its target) -- that is the same user's later window,
  which contains the target. valid/test sequences retrieve from all train sequences (the split
  is chronological, so train windows hold no valid/test targets);
- in-context module: the R retrieved embeddings are projected to the student's width and
  attended with the student's state as the query (one head),
  h'_s = h_s + W_o Σ_r softmax_r(q_s·k_r/√d) v_r,  q = W_q h_s, k = W_k u_r, v = W_v u_r,
  u_r = W_u g~_{n_r} (g~ standardised with the item table's statistics).

Neighbours of train rows are precomputed once; valid/test neighbours are computed per batch.
The evaluated sequences need only their history and fixed tables (train generations, title
embeddings), so LLM-CF does **not** run the teacher at inference.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from dllm2rec.io import UserError
from dllm2rec.distill.base import Batch, DistillContext, DistillMethod, register_method
from dllm2rec.distill.common import standardize, teacher_item_emb, teacher_split
from dllm2rec.distill.spec import LLMCFOptions

_NEG = -1e9


def history_signature(history: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """L2-normalised mean of ``table`` rows over the real items of each history ([B, L] -> [B, r]).

    ``table`` has n+1 rows, the last one (padding) all zeros.
    """
    pad = table.shape[0] - 1
    real = (history != pad).float().unsqueeze(-1)
    s = (table[history] * real).sum(1) / real.sum(1).clamp_min(1)
    return F.normalize(s, dim=1)


@register_method("llmcf")
class LLMCF(DistillMethod):
    Options = LLMCFOptions  # uses_teacher_at_inference False: retrieval reads train generations only

    def __init__(self, cfg: dict, ctx: DistillContext, student: nn.Module):
        super().__init__(cfg, ctx, student)
        self.n_neighbors = self.opt.n_neighbors
        r_dim = self.opt.retrieval_dim
        chunk = self.opt.chunk
        z_raw = teacher_item_emb(ctx)
        z = standardize(z_raw)
        if z.shape[1] > r_dim and z.shape[0] > r_dim:
            state = torch.random.get_rng_state()
            torch.manual_seed(ctx.seed)
            _, _, v = torch.pca_lowrank(z, q=r_dim, center=False, niter=4)
            torch.random.set_rng_state(state)
            z = z @ v
        table = torch.cat([z, z.new_zeros(1, z.shape[1])], 0)
        sp = teacher_split(ctx, "train")
        if sp.gen_emb is None:
            raise UserError("LLM-CF needs the generated-text embeddings of the train split")
        bank = sp.gen_emb  # kept in its stored precision (float16), standardised on lookup
        keys = history_signature(ctx.train_history.long(), table)
        nbr, nbr_valid = self._train_neighbors(keys, ctx.train_history.long(), ctx.train_lengths.long(), ctx.train_target.long(), chunk)
        self.register_buffer("sig_table", table, persistent=False)
        self.register_buffer("keys", keys, persistent=False)
        self.register_buffer("bank", bank, persistent=False)
        self.register_buffer("ref_mean", z_raw.mean(0, keepdim=True), persistent=False)
        self.register_buffer("ref_std", z_raw.std(0, keepdim=True, unbiased=False).clamp_min(1e-6), persistent=False)
        self.register_buffer("train_nbr", nbr, persistent=False)
        self.register_buffer("train_nbr_valid", nbr_valid, persistent=False)
        h = ctx.hidden
        self.w_u = nn.Linear(bank.shape[1], h)
        self.w_q = nn.Linear(h, h, bias=False)
        self.w_k = nn.Linear(h, h, bias=False)
        self.w_v = nn.Linear(h, h, bias=False)
        self.w_o = nn.Linear(h, h)

    @torch.no_grad()
    def _train_neighbors(self, keys, history, lengths, target, chunk):
        S, L = history.shape
        R = min(self.n_neighbors, max(S - 1, 0))
        extra = min(S, R + 2 * L + 1)  # room for the excluded self and same-user windows
        pad = self.ctx.n_items
        base = pad + 1
        # bigram codes of every train history (a*(n+1)+b), pads give codes that never match
        bigrams = history[:, :-1] * base + history[:, 1:]
        last = history.gather(1, (lengths - 1).clamp_min(0).unsqueeze(1)).squeeze(1)
        query_code = last * base + target
        nbrs, valids = [], []
        for start in range(0, S, chunk):  # chunks of rows, vectorised inside
            q = keys[start : start + chunk]
            rows = torch.arange(start, start + q.shape[0])
            sim = q @ keys.T
            sim[torch.arange(q.shape[0]), rows] = _NEG
            cand_sim, cand = sim.topk(extra, dim=1)
            leak = (bigrams[cand] == query_code[rows].view(-1, 1, 1)).any(-1)
            ok = (cand != rows.unsqueeze(1)) & ~leak & (cand_sim > _NEG / 2)
            # keep the first R allowed candidates (already in similarity order)
            score = torch.where(ok, cand_sim, torch.full_like(cand_sim, _NEG))
            top_sim, pos = score.topk(R, dim=1)
            nbrs.append(cand.gather(1, pos))
            valids.append(top_sim > _NEG / 2)
        if not nbrs:
            return torch.zeros(0, R, dtype=torch.long), torch.zeros(0, R, dtype=torch.bool)
        return torch.cat(nbrs), torch.cat(valids)

    @torch.no_grad()
    def neighbors(self, batch: Batch):
        """(neighbour train rows [B, R], valid mask [B, R])."""
        if batch.split == "train":
            rows = batch.rows.to(self.train_nbr.device)
            return self.train_nbr[rows], self.train_nbr_valid[rows]
        q = history_signature(batch.history.to(self.sig_table.device).long(), self.sig_table)
        R = self.train_nbr.shape[1]
        _sim, idx = (q @ self.keys.T).topk(R, dim=1)
        return idx, torch.ones_like(idx, dtype=torch.bool)

    def adjust_state(self, state: torch.Tensor, batch: Batch) -> torch.Tensor:
        nbr, valid = self.neighbors(batch)
        if nbr.shape[1] == 0:
            return state
        g = (self.bank[nbr].float() - self.ref_mean) / self.ref_std
        u = self.w_u(g.to(state.dtype))  # [B, R, h]
        q = self.w_q(state).unsqueeze(1)  # [B, 1, h]
        att = (q * self.w_k(u)).sum(-1) / math.sqrt(state.shape[1])  # [B, R]
        att = torch.softmax(att.masked_fill(~valid, _NEG), dim=1) * valid.any(1, keepdim=True)
        ctx_vec = (att.unsqueeze(-1) * self.w_v(u)).sum(1)
        return state + self.w_o(ctx_vec)
