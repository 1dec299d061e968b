"""The teacher's own decoding loop: beam search and greedy search for LLaMA-shaped causal LMs.

It returns the same beams as Hugging Face ``generate`` (transformers 5: ``num_beams``,
``length_penalty``, ``early_stopping`` and the "keep 2 x num_beams candidates" rule of
``GenerationMixin._beam_search``; greedy as ``_sample`` without sampling) with the stopping rule
:func:`answer_closed` (EOS, or the answer is closed), but does less work:

- **shared prompt**: each prompt is run through the model once (not once per beam); its keys and
  values (the *prefix* cache, ``[layers, prompts, kv_heads, prompt_len, head_dim]``) are shared
  by its beams. Only the short per-beam *suffix* cache (the generated tokens) is reordered when
  beams are reselected. Decode-step attention is computed over prefix and suffix in one softmax.
- **merged LoRA**: the weights used here are the base weights plus the active LoRA delta,
  computed once into separate tensors (only the adapted projections are copied). The model
  itself is not modified, so grounding with the adapter disabled sees the exact base weights.
- **static shapes**: every decode step runs on preallocated buffers with the step number held
  in a tensor, so on a GPU the whole step (forward pass and beam bookkeeping) is captured once
  per batch shape as a CUDA graph and replayed; on a CPU it runs eagerly, and so it does on a GPU
  where the capture fails (one log line says why; :mod:`dllm2rec.fallback`).
- **early stop**: generation stops when every prompt's search has ended (HF's criteria, with
  "answer closed" counted like EOS), at the line break after the answer.
- **token budget**: :func:`token_batches` fills batches up to a number of cached tokens.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from dllm2rec.settings import GenerationSettings
from dllm2rec.teacher.model import causal_lm

NOT_STARTED, QUOTED, OPEN, CLOSED = 0, 1, 2, 3
SUPPORTED = ("llama",)


def answer_closed(text: str) -> bool:
    """True once ``text`` (a response so far) fixes its answer as read by ``clean_generation``,
    which grounds the first non-empty line: a line break after some content. A quote does not
    close the answer (titles hold inch marks and inner quotes: ``"Melissa & Doug 18" Doll"``).
    """
    t = text.lstrip()
    return bool(t) and "\n" in t


def answer_table(tokenizer, vocab_size: int) -> torch.Tensor:
    """``[4, vocab_size]`` int64: the answer state after a token, given the state before it.

    States: not started (whitespace so far), inside the answer (OPEN; QUOTED is kept as a synonym),
    closed (:func:`answer_closed`). Token texts are decoded one by one with special tokens skipped
    (they change nothing).
    """
    n = min(vocab_size, len(tokenizer))
    texts = tokenizer.batch_decode([[i] for i in range(n)], skip_special_tokens=True)
    table = torch.empty((4, vocab_size), dtype=torch.long)
    table[NOT_STARTED], table[QUOTED], table[OPEN], table[CLOSED] = NOT_STARTED, QUOTED, OPEN, CLOSED
    for i, s in enumerate(texts):
        u = s.lstrip()
        if u:
            table[NOT_STARTED, i] = CLOSED if "\n" in u else OPEN
        if "\n" in s:
            table[QUOTED, i] = CLOSED
            table[OPEN, i] = CLOSED
    return table


def token_batches(lengths: list[int], num_beams: int, max_new_tokens: int, batch_tokens: int,
                  batch_size: int) -> list[list[int]]:
    """Prompt indices, longest first, in batches of at most ``batch_size`` prompts whose cache
    (prompts padded to the longest, plus ``num_beams * max_new_tokens`` per prompt) holds at most
    ``batch_tokens`` tokens (a single prompt over the budget still gets a batch of its own)."""
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    batches: list[list[int]] = []
    cur: list[int] = []
    for i in order:
        width = lengths[cur[0]] if cur else lengths[i]
        if cur and (len(cur) >= batch_size or (len(cur) + 1) * (width + num_beams * max_new_tokens) > batch_tokens):
            batches.append(cur)
            cur = []
        cur.append(i)
    if cur:
        batches.append(cur)
    return batches


def _linear(module) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Weight and bias of a Linear, with the active LoRA adapters (if any, unmerged) added."""
    base = getattr(module, "base_layer", None)
    if base is None or not hasattr(module, "get_delta_weight"):
        return module.weight.detach(), None if module.bias is None else module.bias.detach()
    w = base.weight.detach()
    if not getattr(module, "merged", False) and not getattr(module, "disable_adapters", False):
        for name in module.active_adapters:
            if name in module.lora_A:
                w = (w.float() + module.get_delta_weight(name).detach().float()).to(w.dtype)
    return w, None if base.bias is None else base.bias.detach()


def supports(model) -> bool:
    """Whether :class:`Decoder` can run ``model`` (LLaMA-architecture causal LMs)."""
    inner = causal_lm(model)
    return getattr(inner.config, "model_type", None) in SUPPORTED and hasattr(inner, "model")


@dataclass
class Beams:
    """Per prompt: its beams' token ids (best first, special tokens kept) and scores."""
    tokens: list[list[list[int]]]
    scores: list[list[float]]


class Decoder:
    """Beam / greedy search over a LLaMA-shaped model with a shared prompt cache."""

    def __init__(self, model, tokenizer, num_beams: int, max_new_tokens: int,
                 length_penalty: float = GenerationSettings.length_penalty,
                 early_stopping: bool | str = GenerationSettings.early_stopping, stop_at_answer: bool = True,
                 cuda_graph: bool | None = None,
                 trie=None):
        inner = causal_lm(model)
        cfg = inner.config
        self.model = inner
        self.k = int(num_beams)
        self.max_new = int(max_new_tokens)
        self.lp = float(length_penalty)
        self.early = early_stopping
        self.eos = tokenizer.eos_token_id
        self.pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self.eos
        self.heads = cfg.num_attention_heads
        self.kv_heads = getattr(cfg, "num_key_value_heads", None) or self.heads
        self.head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // self.heads
        self.scaling = self.head_dim ** -0.5
        from transformers.activations import ACT2FN
        self.act = ACT2FN[cfg.hidden_act]
        core = inner.model
        self.embed = getattr(core.embed_tokens, "base_layer", core.embed_tokens).weight.detach()
        self.device = self.embed.device
        self.dtype = self.embed.dtype
        self.rotary = core.rotary_emb
        self.norm = core.norm
        self.layers = []
        for layer in core.layers:
            a, m = layer.self_attn, layer.mlp
            self.layers.append({
                "ln1": layer.input_layernorm, "ln2": layer.post_attention_layernorm,
                "q": _linear(a.q_proj), "k": _linear(a.k_proj), "v": _linear(a.v_proj), "o": _linear(a.o_proj),
                "gate": _linear(m.gate_proj), "up": _linear(m.up_proj), "down": _linear(m.down_proj),
            })
        self.lm_head = _linear(inner.lm_head)
        self.vocab = self.lm_head[0].shape[0]
        if stop_at_answer:
            self.table = answer_table(tokenizer, self.vocab).to(self.device)
        else:  # EOS only: the state never leaves "not started"
            self.table = torch.zeros((4, self.vocab), dtype=torch.long, device=self.device)
        self.cuda_graph = (self.device.type == "cuda") if cuda_graph is None else bool(cuda_graph)
        # generation.constrained: a dllm2rec.teacher.constrained.TitleTrie; every beam stays on a title
        self.trie = None if trie is None else trie.to(self.device)
        self._shape = None
        self._graph = None

    # ----------------------------------------------------------------------------- model
    @staticmethod
    def _lin(x, wb):
        return F.linear(x, wb[0], wb[1])

    def _qkv(self, layer, x, positions):
        """Normed input -> q [N, heads, T, d], k and v [N, kv_heads, T, d] (RoPE applied)."""
        from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

        n, t, _ = x.shape
        h = layer["ln1"](x)
        q = self._lin(h, layer["q"]).view(n, t, self.heads, self.head_dim).transpose(1, 2)
        k = self._lin(h, layer["k"]).view(n, t, self.kv_heads, self.head_dim).transpose(1, 2)
        v = self._lin(h, layer["v"]).view(n, t, self.kv_heads, self.head_dim).transpose(1, 2)
        cos, sin = self.rotary(v, positions)
        q, k = apply_rotary_pos_emb(q, k, cos, sin)
        return q, k, v

    def _mlp(self, layer, x):
        h = layer["ln2"](x)
        return x + self._lin(self.act(self._lin(h, layer["gate"])) * self._lin(h, layer["up"]), layer["down"])

    @staticmethod
    def shared_prefix(ids: torch.Tensor, lengths: torch.Tensor) -> int:
        """How many leading tokens every prompt of the batch has in common (the prompt template's
        header and instruction), leaving each prompt at least its last token of its own."""
        if ids.shape[0] < 2:
            return 0
        same = (ids == ids[:1]).all(0)
        c = int(same.long().cumprod(0).sum())
        return max(0, min(c, int(lengths.min()) - 1))

    def _prefill(self, ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Right-padded prompts [B, P] -> last-token logits [B, V] (fp32); fills the prefix cache.

        The tokens every prompt of the batch starts with (:meth:`shared_prefix`: BIGRec's header
        and instruction, a third of a prompt) are run once, for the first prompt, and their keys
        and values copied to every prompt's cache; the rest of each prompt attends to them and to
        itself. The same computation as running every prompt whole (causal attention: a shared
        token sees only shared tokens), done once instead of B times."""
        b, p = ids.shape
        c = self.shared_prefix(ids, lengths)
        if c:
            self._run_layers(ids[:1, :c], torch.full((1,), c, dtype=torch.long, device=self.device), 0, b)
        return self._run_layers(ids[:, c:], lengths, c, b)

    def _run_layers(self, ids: torch.Tensor, lengths: torch.Tensor, start: int, b: int) -> torch.Tensor:
        """Prompt tokens ``start .. start + T - 1`` ([n, T], right-padded; ``lengths``: whole prompt
        lengths) through the model, attending to the cache's tokens ``0 .. start - 1`` (already
        filled) and causally to themselves. Their keys and values go to cache positions
        ``start ..`` of the first ``b`` prompts (``n`` = 1 with ``b`` > 1 fills every prompt's
        shared part at once). Returns the logits [n, V] at each prompt's last token (fp32)."""
        n, t = ids.shape
        x = F.embedding(ids, self.embed)
        positions = torch.arange(start, start + t, device=self.device).expand(n, t)
        valid = positions < lengths[:, None]
        causal = torch.ones(t, t, dtype=torch.bool, device=self.device).tril()
        own = causal[None] & valid[:, None, :]  # [n, T, T]
        mask = torch.cat([own.new_ones(n, t, start), own], dim=2)[:, None]  # the earlier tokens: all seen
        groups = self.heads // self.kv_heads
        for i, layer in enumerate(self.layers):
            q, k, v = self._qkv(layer, x, positions)
            self.prefix_k[i, :b, :, start:start + t] = k
            self.prefix_v[i, :b, :, start:start + t] = v
            k, v = self.prefix_k[i, :n, :, :start + t], self.prefix_v[i, :n, :, :start + t]
            if groups > 1:
                k, v = k.repeat_interleave(groups, dim=1), v.repeat_interleave(groups, dim=1)
            a = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=self.scaling)
            x = x + self._lin(a.transpose(1, 2).reshape(n, t, -1), layer["o"])
            x = self._mlp(layer, x)
        last = x[torch.arange(n, device=self.device), (lengths - 1 - start).clamp(0, t - 1)]
        return self._lin(self.norm(last), self.lm_head).float()

    def _decode(self) -> torch.Tensor:
        """One token per beam (``self.last``, the token generated last: generation index
        ``self.t - 1``, prompt position ``length + self.t - 1``) -> logits [B, K, V] (fp32).
        Its key and value go to suffix slot ``self.t - 1``; slots ``0 .. self.t - 1`` are attended."""
        b, k, g = self.b, self.k, self.heads // self.kv_heads
        n = b * k
        x = F.embedding(self.last.view(n, 1), self.embed)
        slot = self.t - 1
        positions = (self.lengths.repeat_interleave(k) + slot).view(n, 1)
        steps = torch.arange(self.max_new, device=self.device)
        suffix_ok = (steps <= slot).view(1, 1, 1, 1, -1)
        prefix_ok = self.prefix_valid.view(b, 1, 1, 1, -1)
        for i, layer in enumerate(self.layers):
            q, kk, vv = self._qkv(layer, x, positions)
            self.suffix_k[i].index_copy_(2, slot.view(1), kk)
            self.suffix_v[i].index_copy_(2, slot.view(1), vv)
            qg = q.view(b, k, self.kv_heads, g, self.head_dim)
            sk = self.suffix_k[i].view(b, k, self.kv_heads, self.max_new, self.head_dim)
            sv = self.suffix_v[i].view(b, k, self.kv_heads, self.max_new, self.head_dim)
            sp = torch.einsum("bkhgd,bhpd->bkhgp", qg, self.prefix_k[i]) * self.scaling
            ss = torch.einsum("bkhgd,bkhsd->bkhgs", qg, sk) * self.scaling
            sp = sp.float().masked_fill(~prefix_ok, float("-inf"))
            ss = ss.float().masked_fill(~suffix_ok, float("-inf"))
            w = torch.softmax(torch.cat([sp, ss], dim=-1), dim=-1).to(self.dtype)
            pw, sw = w.split([sp.shape[-1], self.max_new], dim=-1)
            a = torch.einsum("bkhgp,bhpd->bkhgd", pw, self.prefix_v[i]) + torch.einsum("bkhgs,bkhsd->bkhgd", sw, sv)
            x = x + self._lin(a.reshape(n, 1, -1), layer["o"])
            x = self._mlp(layer, x)
        return self._lin(self.norm(x[:, 0]), self.lm_head).float().view(b, k, -1)

    # ----------------------------------------------------------------------------- search
    def _allocate(self, b: int, p: int) -> None:
        """Static buffers for ``b`` prompts of at most ``p`` tokens (reused while the shape holds)."""
        if self._shape == (b, p):
            return
        self._graph = None
        self._shape = (b, p)
        self.b = b
        dev, layers = self.device, len(self.layers)
        kv = (layers, b, self.kv_heads, p, self.head_dim)
        self.prefix_k = torch.zeros(kv, dtype=self.dtype, device=dev)
        self.prefix_v = torch.zeros(kv, dtype=self.dtype, device=dev)
        sfx = (layers, b * self.k, self.kv_heads, self.max_new, self.head_dim)
        self.suffix_k = torch.zeros(sfx, dtype=self.dtype, device=dev)
        self.suffix_v = torch.zeros(sfx, dtype=self.dtype, device=dev)
        self.prefix_valid = torch.zeros((b, p), dtype=torch.bool, device=dev)
        self.lengths = torch.ones(b, dtype=torch.long, device=dev)
        self.t = torch.zeros((), dtype=torch.long, device=dev)
        self.last = torch.zeros((b, self.k), dtype=torch.long, device=dev)
        self.run_seqs = torch.zeros((b, self.k, self.max_new), dtype=torch.long, device=dev)
        self.run_scores = torch.zeros((b, self.k), dtype=torch.float32, device=dev)
        self.run_state = torch.zeros((b, self.k), dtype=torch.long, device=dev)
        self.run_node = torch.zeros((b, self.k), dtype=torch.long, device=dev)  # trie node (constrained)
        self.fin_seqs = torch.zeros((b, self.k, self.max_new), dtype=torch.long, device=dev)
        self.fin_scores = torch.zeros((b, self.k), dtype=torch.float32, device=dev)
        self.fin_len = torch.zeros((b, self.k), dtype=torch.long, device=dev)
        self.fin_flag = torch.zeros((b, self.k), dtype=torch.bool, device=dev)
        self.unsat = torch.ones((b, 1), dtype=torch.bool, device=dev)
        self.done = torch.zeros((), dtype=torch.bool, device=dev)
        self.max_new_f = torch.tensor(float(self.max_new), device=dev)

    def _reset(self) -> None:
        self.t.zero_()
        self.run_seqs.fill_(self.pad)
        self.run_scores.fill_(-1e9)
        self.run_scores[:, 0] = 0.0
        self.run_state.fill_(NOT_STARTED)
        self.run_node.zero_()
        self.fin_seqs.fill_(self.pad)
        self.fin_scores.fill_(-1e9)
        self.fin_len.zero_()
        self.fin_flag.zero_()
        self.unsat.fill_(True)
        self.done.fill_(False)
        self.suffix_k.zero_()
        self.suffix_v.zero_()

    def _gather(self, x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        """x [B, M, ...] gathered along dim 1 by idx [B, J]."""
        return torch.take_along_dim(x, idx.view(idx.shape + (1,) * (x.dim() - 2)), dim=1)

    def _select(self, logits: torch.Tensor) -> None:
        """Beam (or greedy) bookkeeping for step ``self.t`` given logits [B, K, V]; advances t."""
        b, k, v = logits.shape
        t = self.t
        last_step = t + 1 >= self.max_new
        if self.k == 1:  # greedy, as HF's _sample
            if self.trie is not None:
                logits = logits + self.trie.mask(self.run_node)
            tok = logits[:, 0].argmax(-1)
            open_ = ~self.fin_flag[:, 0]
            tok = torch.where(open_, tok, torch.full_like(tok, self.pad))
            state = torch.where(open_, self.table[self.run_state[:, 0], tok], self.run_state[:, 0])
            self.run_seqs[:, 0].index_copy_(1, t.view(1), tok.view(b, 1))
            hit = (tok == self.eos) | (state == CLOSED)
            self.fin_len[:, 0] += open_.long()
            self.fin_flag[:, 0] |= open_ & hit
            self.run_state[:, 0] = state
            if self.trie is not None:
                self.run_node[:, 0] = self.trie.step(self.run_node[:, 0], tok)
            self.last[:, 0] = tok
            self.done.copy_(self.fin_flag.all() | last_step)
            self.t += 1
            return
        two_k = 2 * k
        logp = torch.log_softmax(logits, dim=-1)
        if self.trie is not None:  # after the log-softmax, as HF's logits processors in beam search
            logp = logp + self.trie.mask(self.run_node)
        logp = logp + self.run_scores[:, :, None]
        top_lp, top_idx = torch.topk(logp.view(b, k * v), two_k)
        parent = top_idx // v
        tok = top_idx % v
        state = self.table[self._gather(self.run_state, parent), tok]
        hits = (tok == self.eos) | (state == CLOSED) | last_step
        seqs = self._gather(self.run_seqs, parent)
        seqs.scatter_(2, t.view(1, 1, 1).expand(b, two_k, 1), tok.unsqueeze(-1))
        # running beams for the next step: the best candidates that did not stop
        run_lp = top_lp + hits.float() * -1e9
        sel = torch.topk(run_lp, k).indices
        # finished hypotheses: the top-k candidates that stopped, length-normalised
        gen_len = (t + 1).float()
        top_mask = torch.arange(two_k, device=self.device) < k
        just = hits & top_mask
        fin_lp = top_lp / gen_len ** self.lp
        full = self.fin_flag.all(dim=1, keepdim=True) & (self.early is True)
        fin_lp = fin_lp + full.float() * -1e9 + (~self.unsat).float() * -1e9 + (~just).float() * -1e9
        m_scores = torch.cat([self.fin_scores, fin_lp], dim=1)
        keep = torch.topk(m_scores, k).indices
        m_seqs = torch.cat([self.fin_seqs, seqs], dim=1)
        m_len = torch.cat([self.fin_len, (t + 1).expand(b, two_k)], dim=1)
        m_flag = torch.cat([self.fin_flag, just], dim=1)
        self.fin_seqs.copy_(self._gather(m_seqs, keep))
        self.fin_scores.copy_(self._gather(m_scores, keep))
        self.fin_len.copy_(self._gather(m_len, keep))
        self.fin_flag.copy_(self._gather(m_flag, keep))
        # reorder the running state and the per-beam suffix cache
        self.run_seqs.copy_(self._gather(seqs, sel))
        self.run_scores.copy_(self._gather(run_lp, sel))
        self.run_state.copy_(self._gather(state, sel))
        if self.trie is not None:
            node = self.trie.step(self._gather(self.run_node, parent), tok)
            self.run_node.copy_(self._gather(node, sel))
        self.last.copy_(self._gather(tok, sel))
        beam = self._gather(parent, sel) + torch.arange(b, device=self.device)[:, None] * k
        self.suffix_k.copy_(self.suffix_k.index_select(1, beam.view(-1)))
        self.suffix_v.copy_(self.suffix_v.index_select(1, beam.view(-1)))
        # HF's early-stop heuristic and loop condition
        if self.early == "never" and self.lp > 0.0:
            best_len = self.max_new_f
        else:
            best_len = gen_len
        best = self.run_scores[:, :1] / best_len ** self.lp
        worst = torch.where(self.fin_flag, self.fin_scores.min(dim=1, keepdim=True).values, -1.0e9)
        self.unsat &= (best > worst).any(dim=-1, keepdim=True)
        go_on = self.unsat.any() & ~(self.fin_flag.all() & (self.early is True)) & ~hits.all()
        self.done.copy_(~go_on | last_step)
        self.t += 1

    def _step(self) -> None:
        self._select(self._decode())

    def _warm_up(self) -> None:
        """Run the decode step twice on the current buffers, as a CUDA graph's capture needs first
        (kernels chosen, workspaces allocated), in the state a replay starts from: one token
        generated (``t = 1``; at ``t = 0`` there is no token to decode yet). The caller resets
        the buffers afterwards."""
        for _ in range(2):
            self.t.fill_(1)
            self._step()
        self.t.fill_(1)

    def _capture(self) -> "torch.cuda.CUDAGraph":
        """Record one decode step as a CUDA graph (warm-up runs first on a side stream)."""
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            self._warm_up()
        torch.cuda.current_stream().wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            self._step()
        return graph

    def _no_graph(self) -> None:
        """The eager path after a failed capture: no graph, for this shape and every later one."""
        self.cuda_graph = False
        return None

    @torch.inference_mode()
    def run(self, prompts: list[list[int]]) -> Beams:
        """Search a batch of tokenised prompts; returns their finished beams (best first).

        If the CUDA graph cannot be captured (driver, memory, an unsupported operation), the
        decoder runs eagerly from then on, after one log line that says why
        (:func:`dllm2rec.fallback.attempt`); the beams are the same."""
        from dllm2rec import fallback

        b = len(prompts)
        width = max(len(p) for p in prompts)
        if self.cuda_graph:
            self._allocate(b, -(-width // 64) * 64)  # fewer graph shapes
            if self._graph is None:
                self._reset()
                self._graph = fallback.attempt("teacher decode step: CUDA-graph capture", self._capture,
                                               self._no_graph)
        if not self.cuda_graph:
            self._allocate(b, width)
        width = self._shape[1]
        ids = torch.full((b, width), self.pad, dtype=torch.long)
        for row, p in enumerate(prompts):
            ids[row, :len(p)] = torch.tensor(p)
        lengths = torch.tensor([len(p) for p in prompts], dtype=torch.long, device=self.device)
        self._reset()
        self.lengths.copy_(lengths)
        self.prefix_valid.copy_(torch.arange(width, device=self.device)[None] < lengths[:, None])
        self.prefix_k.zero_()
        self.prefix_v.zero_()
        logits = self._prefill(ids.to(self.device), lengths)
        self._select(logits[:, None].expand(b, self.k, logits.shape[-1]))
        while not bool(self.done):
            if self._graph is not None:
                self._graph.replay()
            else:
                self._step()
        seqs, lens = self.fin_seqs.cpu(), self.fin_len.cpu()
        if self.k == 1:
            seqs, lens = self.run_seqs.cpu(), self.fin_len.cpu()
        scores = self.fin_scores.cpu()
        tokens = [[seqs[i, j, :lens[i, j]].tolist() for j in range(self.k)] for i in range(b)]
        return Beams(tokens, [scores[i].tolist() for i in range(b)])


class AnswerStop:
    """A transformers ``StoppingCriteria``: EOS is HF's own; this adds "answer closed" (the same
    rule as :class:`Decoder`) so that the ``hf`` engine stops where ours does."""

    def __init__(self, table: torch.Tensor, prompt_len: int):
        self.table = table  # answer_table(tokenizer, vocab_size)
        self.prompt_len = prompt_len

    def __call__(self, input_ids, scores=None, **kwargs):
        table = self.table.to(input_ids.device)
        state = torch.full((input_ids.shape[0],), NOT_STARTED, dtype=torch.long, device=input_ids.device)
        for pos in range(self.prompt_len, input_ids.shape[1]):
            state = table[state, input_ids[:, pos]]
        return state == CLOSED
