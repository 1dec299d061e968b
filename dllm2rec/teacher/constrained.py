"""Title-constrained beam search (``generation.constrained: true``): every beam is a catalogue title.

Following D3 (Bao et al., "Decoding Matters", EMNLP 2024; SAI990323/DecodingMatters
``code/evaluate.py`` and ``code/LogitProcesser.py``): each item's response, as the fine-tuned
teacher was trained to write it (``"Title"`` then EOS, tokenised in the context of the prompt's
last line ``### Response:\\n``), is a path of a token trie; at each step a beam may only take a
token that continues its path, by adding ``-inf`` to the log-probabilities of every other token
(after the log-softmax, as transformers' ``PrefixConstrainedLogitsProcessor`` and D3's
``CFEnhancedLogitsProcessor`` do: the model's own probabilities, not renormalised). A beam that
reaches EOS has produced exactly one catalogue title.

What we follow from D3: the trie over the tokenised responses with EOS appended, keyed by the
tokens after the response header, and the mask on the log-probabilities. What we change: D3
hashes the token prefix into a Python dict per beam per step; here the trie is a sorted array
of ``node * vocab + token`` edge keys, so a step's mask and the beams' next nodes are two
``searchsorted`` calls over static shapes (no host round trip; a CUDA graph can capture them).
D3 also fixes beam scores with a length normalisation and adds a collaborative-filtering
guidance term; we keep the beam scoring of the unconstrained search (HF's), and no guidance.

The teacher's ranked list then starts with its beams' items in beam-score order (each title's
items, in item order) and is completed by grounding the top beam's answer
(:func:`dllm2rec.teacher.generate.generate_and_ground`).
"""
from __future__ import annotations

import numpy as np
import torch

from dllm2rec.io import UserError
from dllm2rec.teacher.prompts import format_response

RESPONSE_HEADER = "### Response:\n"  # the prompt's last line (prompts.format_prompt)
ROOT = 0


def response_tokens(tokenizer, title: str) -> list[int]:
    """The tokens of ``"title"`` as they follow the prompt (tokenised after the response header,
    whose tokens are then cut off), EOS appended."""
    head = tokenizer(RESPONSE_HEADER, add_special_tokens=False)["input_ids"]
    both = tokenizer(RESPONSE_HEADER + format_response(title), add_special_tokens=False)["input_ids"]
    ids = both[len(head):] if both[:len(head)] == head else \
        tokenizer(format_response(title), add_special_tokens=False)["input_ids"]
    return list(ids) + [tokenizer.eos_token_id]


class TitleTrie:
    """A token trie over the catalogue's responses. Nodes are ints (``ROOT`` = 0); ``dead`` is a
    node without children (where a beam lands after a token outside the trie: every later token
    is then -inf)."""

    def __init__(self, tokenizer, titles: list[str], vocab_size: int, device=None):
        if tokenizer.eos_token_id is None:
            raise UserError("generation.constrained needs a tokenizer with an EOS token (the end of a title)")
        self.vocab = int(vocab_size)
        edges: dict[tuple[int, int], int] = {}
        self.leaf_items: dict[int, list[int]] = {}
        n_nodes = 1
        for item, title in enumerate(titles):
            if not title:
                continue
            node = ROOT
            for tok in response_tokens(tokenizer, title):
                if tok >= self.vocab:
                    raise UserError(f"title {title!r} tokenises to id {tok}, beyond the model's {self.vocab} outputs")
                child = edges.get((node, tok))
                if child is None:
                    child = edges[(node, tok)] = n_nodes
                    n_nodes += 1
                node = child
            self.leaf_items.setdefault(node, []).append(item)
        if not edges:
            raise UserError("generation.constrained: the catalogue has no titles to constrain the beams to")
        self.edges = edges  # (node, token) -> child, for walks on the host
        self.dead = n_nodes
        self.n_nodes = n_nodes + 1
        keys = sorted((node * self.vocab + tok, child) for (node, tok), child in edges.items())
        self.keys = torch.tensor([k for k, _ in keys], dtype=torch.long, device=device)
        self.children = torch.tensor([c for _, c in keys], dtype=torch.long, device=device)

    def to(self, device) -> "TitleTrie":
        self.keys, self.children = self.keys.to(device), self.children.to(device)
        return self

    def _find(self, keys: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        pos = torch.searchsorted(self.keys, keys).clamp_max(len(self.keys) - 1)
        return pos, self.keys[pos] == keys

    def mask(self, nodes: torch.Tensor) -> torch.Tensor:
        """float ``[..., vocab]``: 0 for the tokens that continue each node's titles, -inf elsewhere."""
        keys = nodes.unsqueeze(-1) * self.vocab + torch.arange(self.vocab, device=nodes.device)
        _, found = self._find(keys)
        return torch.zeros(found.shape, dtype=torch.float32, device=nodes.device).masked_fill(~found, float("-inf"))

    def step(self, nodes: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """The node after ``tokens`` from ``nodes`` (same shapes); ``dead`` off the trie."""
        pos, found = self._find(nodes * self.vocab + tokens)
        return torch.where(found, self.children[pos], torch.full_like(nodes, self.dead))

    def walk(self, tokens: list[int]) -> int:
        """The node after ``tokens`` from the root (on the host; ``dead`` off the trie)."""
        node = ROOT
        for tok in tokens:
            node = self.edges.get((node, int(tok)), self.dead)
        return node

    def items_of(self, tokens: list[int]) -> list[int]:
        """The items whose response is exactly ``tokens`` (EOS included), or [] (not a whole title)."""
        return list(self.leaf_items.get(self.walk(tokens), []))


def hf_processor(trie: TitleTrie, prompt_len: int):
    """A transformers ``LogitsProcessor`` applying the same mask to ``generate`` (engine hf):
    the node of each running sequence is walked from its generated tokens."""
    from transformers import LogitsProcessor

    class TrieMask(LogitsProcessor):
        def __call__(self, input_ids, scores):
            nodes = torch.tensor([trie.walk(seq[prompt_len:].tolist()) for seq in input_ids], device=scores.device)
            return scores + trie.mask(nodes).to(scores.dtype)

    return TrieMask()


def beams_first(beam_items: list[list[int]], topk_items: np.ndarray, topk_dist: np.ndarray, queries, items):
    """Each row's ranked list: its beams' items (beam-score order, each once), then its grounded
    items not among them, cut to the grounded list's length N. Distances are each listed item's
    squared L2 distance to the row's query (the top beam's answer), so they ascend only within the
    grounded part. Returns ``(topk_items int32 [m, N], topk_dist float32 [m, N], n_beam_items int [m])``."""
    m, n = topk_items.shape
    out_i, out_d = np.empty_like(topk_items), np.empty_like(topk_dist)
    n_beam = np.zeros(m, dtype=np.int64)
    for r in range(m):
        head = list(dict.fromkeys(int(i) for i in beam_items[r]))[:n]
        seen = set(head)
        rest = [j for j, i in enumerate(topk_items[r]) if int(i) not in seen][: n - len(head)]
        if head:
            x = items[torch.tensor(head, device=items.device)].float()
            q = queries[r].to(items.device).float()
            out_d[r, :len(head)] = ((x - q) ** 2).sum(-1).cpu().numpy()
        out_i[r, :len(head)] = head
        out_i[r, len(head):] = topk_items[r, rest]
        out_d[r, len(head):] = topk_dist[r, rest]
        n_beam[r] = len(head)
    return out_i, out_d, n_beam
