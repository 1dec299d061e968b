"""LLM-CF (Sun et al. CIKM 2024, "Large Language Models Enhanced Collaborative Filtering").

LLM-CF keeps a base of LLM reasoning (chain-of-thought) for a sample of training examples; for
every example it retrieves the most similar base examples as in-context demonstrations, and a
small in-context transformer turns them into a feature that is added to the recommender's user
representation. It follows the retrieval (sequential) task of Jeryi-Sun/LLM-CF for the
sequential models SASREC_aug / GRU4REC_aug (docs/methods.md, "LLM-CF"), with the adaptations
named below:

- base: a uniform ``base_fraction`` = 1/10 sample of the train sequences (``readme.md``); the
  reasoning embedding of a base example is the teacher's generated-text embedding g (adaptation:
  BIGRec generates a title, not a chain of thought);
- retrieval (``LLaMA-Factory/generate/retrieval_ICL_retrieval.py``): score = dot product of the
  mean item-text vectors of the two histories, top ``n_neighbors`` = 4 (``main_aug.py``); a base
  example of the same user at a later position is skipped. Here: a train query never retrieves
  itself nor a base row whose history holds the bigram (query's last item, query's target),
  i.e. the same user's later window; valid/test queries retrieve from the whole base;
- in-context tokens (``retrieval_task/src_code/models/base.py`` ``embed_orig_and_aug_data_fileds``):
  per demonstration r [W_h [enc(history_r); W_c t(history_r); e(target_r); W_c t(target_r)],
  W_c normalise(g_r), label], then the query W_h [h_s; W_c t(history_s); 0; W_c 0] (its target
  replaced by the padding item), where enc is the recommender's own sequence encoder: the
  sequential models override ``BaseModel.embed_input_fields`` (which mean-pools the history's
  item-ID embeddings, for the non-sequential models) so that ``history_item_id`` goes through
  ``log2feats`` (``models/SASREC.py`` ``SASREC_aug.embed_input_fields``) or ``his2feat``
  (``models/GRU4REC.py`` ``GRU4REC_aug.embed_input_fields``), for the demonstrations and the
  query alike; here the student's ``encode`` (DROS: its SASRec encoder), and the query's h_s is
  the state of the same forward pass (LLM-CF recomputes it, with its own dropout draw).
  e is the student's item embedding, t the item-text vectors (mean over a history), W_c one
  linear map of every text vector (``cot_mapping_mlp_hidden_size`` [768, 64]), W_h one linear
  map (``ICL_history_mlp`` [320, 64]: five 64-wide fields there; four here, adaptation: no
  user-ID embedding, the students have none), and the label one learned vector (there
  ``nn.Embedding(2, ·)``; every base example here is a positive);
- in-context module (``models/transformer_decoder.py``): a LLaMA-style decoder (pre-RMSNorm,
  rotary positions, causal attention, SwiGLU) with ``n_layers`` = 2, ``n_heads`` = 2, width =
  the student's hidden size, and a final RMSNorm; its output at the query token is ICL_s;
- combination (``models/SASREC.py`` ``SASREC_aug.forward``): h'_s = h_s + 0.1 · ICL_s.
  The CoT reconstruction loss is off in the released configs (``reconstruct_weight: 0``).

Neighbours of train rows and their histories' mean text vectors t(history) are computed once;
valid/test neighbours and vectors per batch. Evaluation needs
the sequence's history and fixed tables only, so LLM-CF does **not** run the teacher at inference.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from dllm2rec.distill.base import Batch, DistillContext, DistillMethod, register_method
from dllm2rec.distill.common import SeededSampler
from dllm2rec.distill.knowledge import Knowledge
from dllm2rec.distill.spec import LLMCFOptions
from dllm2rec.io import UserError

_NEG = -1e9


def history_text(history: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """Mean of ``table`` rows over the real items of each history ([B, L] -> [B, d]); ``table``
    has n+1 rows, the last (padding) all zeros."""
    pad = table.shape[0] - 1
    real = (history != pad).to(table.dtype).unsqueeze(-1)
    return (table[history] * real).sum(1) / real.sum(1).clamp_min(1)


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


def rotary(x: torch.Tensor) -> torch.Tensor:
    """Rotary position embedding of x [B, H, T, hd]: pair (2j, 2j+1) at position t rotated by
    t / 10000^(2j/hd)."""
    T, hd = x.shape[-2], x.shape[-1]
    freq = 1.0 / (10000.0 ** (torch.arange(0, hd, 2, device=x.device, dtype=torch.float32) / hd))
    ang = torch.arange(T, device=x.device, dtype=torch.float32).unsqueeze(1) * freq  # [T, hd/2]
    cos, sin = ang.cos().to(x.dtype), ang.sin().to(x.dtype)
    a, b = x[..., 0::2], x[..., 1::2]
    return torch.stack([a * cos - b * sin, a * sin + b * cos], dim=-1).flatten(-2)


class DecoderBlock(nn.Module):
    def __init__(self, dim: int, n_heads: int, ff_hidden: int):
        super().__init__()
        self.n_heads = n_heads
        self.wq, self.wk, self.wv, self.wo = (nn.Linear(dim, dim, bias=False) for _ in range(4))
        self.w1 = nn.Linear(dim, ff_hidden, bias=False)
        self.w2 = nn.Linear(ff_hidden, dim, bias=False)
        self.w3 = nn.Linear(dim, ff_hidden, bias=False)
        self.attention_norm, self.ffn_norm = RMSNorm(dim), RMSNorm(dim)

    def attention(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        B, T, d = x.shape
        split = lambda t: t.view(B, T, self.n_heads, d // self.n_heads).transpose(1, 2)  # noqa: E731
        q, k, v = rotary(split(self.wq(x))), rotary(split(self.wk(x))), split(self.wv(x))
        att = (q @ k.transpose(-1, -2)) / math.sqrt(d // self.n_heads) + mask
        out = torch.softmax(att, dim=-1) @ v
        return self.wo(out.transpose(1, 2).reshape(B, T, d))

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        h = x + self.attention(self.attention_norm(x), mask)
        g = self.ffn_norm(h)
        return h + self.w2(F.silu(self.w1(g)) * self.w3(g))


class InContextTransformer(nn.Module):
    """LLM-CF's ``Transformer`` (LLaMA-style): causal blocks, a final RMSNorm."""

    def __init__(self, dim: int, n_layers: int, n_heads: int, multiple_of: int = 32):
        super().__init__()
        hidden = int(2 * (2 * dim) / 3)  # dim_feedforward = 2·dim, SwiGLU's 2/3, rounded up to multiple_of
        hidden = multiple_of * ((hidden + multiple_of - 1) // multiple_of)
        self.layers = nn.ModuleList(DecoderBlock(dim, n_heads, hidden) for _ in range(n_layers))
        self.norm = RMSNorm(dim)

    def forward(self, x: torch.Tensor, key_valid: torch.Tensor | None = None) -> torch.Tensor:
        T = x.shape[1]
        mask = torch.full((T, T), float("-inf"), device=x.device, dtype=x.dtype).triu(1).view(1, 1, T, T)
        if key_valid is not None:  # tokens of missing demonstrations are never attended to
            # (finite, so that a row whose visible keys are all missing stays finite)
            mask = mask + torch.where(key_valid, 0.0, _NEG).to(x.dtype).view(x.shape[0], 1, 1, T)
        for layer in self.layers:
            x = layer(x, mask)
        return self.norm(x)


@register_method("llmcf")
class LLMCF(DistillMethod):
    Options = LLMCFOptions

    def __init__(self, cfg: dict, ctx: DistillContext, student: nn.Module):
        super().__init__(cfg, ctx, student)
        o = self.opt
        self.__dict__["_student"] = student  # the encoder of the demonstrations' histories (not a submodule)
        kn = Knowledge(ctx, o.encoder)
        text = torch.cat([kn.items, kn.items.new_zeros(1, kn.dim)], 0)  # [n+1, d_e], padding row 0
        sig = torch.cat([F.normalize(kn.items, dim=1), kn.items.new_zeros(1, kn.dim)], 0)
        S = ctx.train_history.shape[0]
        n_base = min(S, max(1, round(o.base_fraction * S))) if S else 0
        gen = SeededSampler(ctx.seed, salt=11)("cpu")
        base = torch.randperm(S, generator=gen)[:n_base].sort().values
        history, lengths, target = ctx.train_history.long(), ctx.train_lengths.long(), ctx.train_target.long()
        keys = history_text(history[base], sig)
        cot = F.normalize(kn.scale(kn.generated_raw("train")[base]), dim=1)
        nbr, nbr_valid = self._train_neighbors(history, lengths, target, base, keys, sig)
        # t(history) of every train row, computed once (the text table is fixed): a training step's
        # queries and demonstrations are train rows (the same numbers as per batch, row by row)
        train_text = torch.cat([history_text(history[start:start + o.chunk], text) for start in range(0, S, o.chunk)]
                               or [text.new_zeros(0, kn.dim)])
        self.register_buffer("text", text, persistent=False)
        self.register_buffer("train_text", train_text, persistent=False)
        self.register_buffer("sig", sig, persistent=False)
        self.register_buffer("base", base, persistent=False)
        self.register_buffer("keys", keys, persistent=False)
        self.register_buffer("cot", cot, persistent=False)
        self.register_buffer("train_nbr", nbr, persistent=False)  # positions in the base
        self.register_buffer("train_nbr_valid", nbr_valid, persistent=False)
        h = ctx.hidden
        if h % o.n_heads or (h // o.n_heads) % 2:
            raise UserError(f"methods.llmcf.n_heads: the student's hidden size {h} must split into {o.n_heads} heads "
                            "of even width (rotary positions rotate pairs)")
        self.w_c = nn.Linear(kn.dim, h)  # every text vector -> student width (bge_emb_mapping)
        self.w_h = nn.Linear(4 * h, h)  # interaction token (history_mlp)
        self.label = nn.Parameter(torch.randn(h) * 0.02)  # label embedding of a (positive) demonstration
        self.icl = InContextTransformer(h, o.n_layers, o.n_heads)

    @torch.no_grad()
    def _train_neighbors(self, history, lengths, target, base, keys, sig):
        o = self.opt
        S, L = history.shape
        R = min(o.n_neighbors, len(base))
        pad = self.ctx.n_items
        code_base = pad + 1
        # bigram codes of every base history (a*(n+1)+b); pads give codes that never match
        bh = history[base]
        bigrams = bh[:, :-1] * code_base + bh[:, 1:]
        last = history.gather(1, (lengths - 1).clamp_min(0).unsqueeze(1)).squeeze(1)
        query_code = last * code_base + target
        extra = min(len(base), R + 2 * L + 1)  # room for self and the same user's later windows
        nbrs, valids = [], []
        for start in range(0, S, o.chunk):  # chunks of rows, vectorised inside
            rows = torch.arange(start, min(start + o.chunk, S))
            sim = history_text(history[rows], sig) @ keys.T  # [c, M]
            cand_sim, cand = sim.topk(extra, dim=1)
            leak = (bigrams[cand] == query_code[rows].view(-1, 1, 1)).any(-1)
            ok = (base[cand] != rows.unsqueeze(1)) & ~leak
            score = torch.where(ok, cand_sim, torch.full_like(cand_sim, _NEG))
            top, pos = score.topk(R, dim=1)  # the first R allowed, in similarity order
            nbrs.append(cand.gather(1, pos))
            valids.append(top > _NEG / 2)
        if not nbrs:
            return torch.zeros(0, R, dtype=torch.long), torch.zeros(0, R, dtype=torch.bool)
        return torch.cat(nbrs), torch.cat(valids)

    @torch.no_grad()
    def neighbors(self, batch: Batch):
        """(base positions of the demonstrations [B, R], valid mask [B, R]), best first."""
        if batch.split == "train":
            rows = batch.rows.to(self.train_nbr.device)
            return self.train_nbr[rows], self.train_nbr_valid[rows]
        q = history_text(batch.history.to(self.sig.device).long(), self.sig)
        _sim, idx = (q @ self.keys.T).topk(self.train_nbr.shape[1], dim=1)
        return idx, torch.ones_like(idx, dtype=torch.bool)

    def tokens(self, state: torch.Tensor, batch: Batch):
        """The in-context sequence [B, 3R+1, h] and its valid-token mask [B, 3R+1]."""
        student, ctx = self._student, self.ctx
        nbr, valid = self.neighbors(batch)
        B, R = nbr.shape
        dev = state.device
        # each distinct demonstration once (a base row recurs across the batch), then gathered
        uniq, inv = torch.unique(nbr.reshape(-1), return_inverse=True)
        rows = self.base[uniq].to(ctx.train_history.device)
        h_hist = ctx.train_history[rows].to(dev).long()
        h_len = ctx.train_lengths[rows].to(dev).long()
        h_tgt = ctx.train_target[rows].to(dev).long()
        table = self.item_table(student)
        enc = student.encode(h_hist, h_len, table)  # the demonstrations' histories, by the student
        h_text = self.train_text[self.base[uniq]].to(dev)  # t(history) of each demonstration
        inter = self.w_h(torch.cat([enc, self.w_c(h_text), student.item_emb.weight[h_tgt], self.w_c(self.text[h_tgt])],
                                   dim=1))
        inter = inter[inv.to(dev)].view(B, R, -1)
        cot = self.w_c(self.cot[uniq].to(dev))[inv.to(dev)].view(B, R, -1)
        label = self.label.expand(B, R, -1)
        demos = torch.stack([inter, cot, label], dim=2).reshape(B, 3 * R, -1)
        if batch.split == "train":
            query_text = self.train_text[batch.rows.to(self.train_text.device)].to(dev)
        else:
            query_text = history_text(batch.history.to(dev).long(), self.text)
        query = self.w_h(torch.cat([state, self.w_c(query_text), torch.zeros_like(state),
                                    self.w_c(torch.zeros_like(self.text[:1])).expand(B, -1)], dim=1))
        seq = torch.cat([demos, query.unsqueeze(1)], dim=1)
        key_valid = torch.cat([valid.to(dev).repeat_interleave(3, dim=1), torch.ones(B, 1, dtype=torch.bool, device=dev)], 1)
        return seq, key_valid

    def adjust_state(self, state: torch.Tensor, batch: Batch) -> torch.Tensor:
        if self.train_nbr.shape[1] == 0:
            return state
        seq, key_valid = self.tokens(state, batch)
        icl = self.icl(seq, key_valid)[:, -1]
        return state + self.opt.icl_weight * icl
