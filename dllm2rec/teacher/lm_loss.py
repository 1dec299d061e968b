"""The causal LM's token loss for SFT, computed without materialising the vocabulary-wide logits.

transformers' ``LlamaForCausalLM(labels=...)`` computes the logits of every position of the
batch (``[B, T, V]``: for the default's micro batch 16 x 214 x 49,152), upcasts them to fp32
and takes ``cross_entropy`` over them. On a CPU that is most of an SFT step beside the matmuls:
the cast, the log-softmax, its backward and the zero-filled gradient took 4.6 s of a 10.5 s
step (docs/benchmarks.md, "SFT's loss without the logits"). :func:`token_loss` computes the same
loss (the mean over labelled positions of ``-log softmax(h W^T)[label]``, the next token's,
padding excluded) from the final hidden states, a chunk of rows at a time, and computes the
hidden states' gradient in the same pass; the LM head's weight is frozen under LoRA, so it
needs none. Positions without a label (padding, the last one) are skipped.

The hidden states come from the model's own forward (so that a DDP wrapper's forward runs, as
accelerate's multi-GPU SFT needs) with the LM head replaced by an identity for that call.
"""
from __future__ import annotations

import contextlib

import torch
from torch import nn

IGNORE = -100  # transformers' ignore_index
CHUNK = 256  # rows of logits held at once: 256 x 49,152 fp32 = 50 MB (128 to 512 ran as fast, docs/benchmarks.md)


class _HeadCrossEntropy(torch.autograd.Function):
    """mean_i CE(h_i W^T, y_i) over the rows with y_i != IGNORE; the gradient for ``hidden``
    only (``weight`` is the frozen LM head)."""

    @staticmethod
    def forward(ctx, hidden, weight, targets, chunk):
        keep = targets != IGNORE
        n = keep.sum().clamp(min=1)
        total = torch.zeros((), dtype=torch.float32, device=hidden.device)
        grad = torch.zeros_like(hidden) if ctx.needs_input_grad[0] else None
        rows = torch.nonzero(keep).squeeze(1)
        for start in range(0, rows.numel(), chunk):
            idx = rows[start:start + chunk]
            h, y = hidden[idx].to(weight.dtype), targets[idx]  # accelerate hands bf16 states out as fp32
            logits = (h @ weight.T).float()  # as transformers: the head in the model's dtype, then fp32
            lse = torch.logsumexp(logits, dim=1)
            total += (lse - logits.gather(1, y[:, None]).squeeze(1)).sum()
            if grad is not None:
                probs = logits.sub_(lse[:, None]).exp_()  # in place: the chunk's one buffer
                probs[torch.arange(idx.numel(), device=idx.device), y] -= 1.0
                grad[idx] = (probs.div_(n).to(weight.dtype) @ weight).to(hidden.dtype)
        ctx.save_for_backward(grad)
        return total / n

    @staticmethod
    def backward(ctx, g):
        (grad,) = ctx.saved_tensors
        return grad * g.to(grad.dtype), None, None, None


@contextlib.contextmanager
def _hidden_states_out(inner):
    """``inner``'s LM head swapped for an identity: its forward returns the final hidden states."""
    head = inner.lm_head
    inner.lm_head = nn.Identity()
    try:
        yield head
    finally:
        inner.lm_head = head


def _frozen_head_lm(model):
    """The causal LM inside ``model`` (a PeftModel, a DDP wrapper) when its LM head is a plain
    frozen linear layer without bias (the LoRA SFT of q/v/...), else None."""
    from dllm2rec.teacher.model import causal_lm

    inner = causal_lm(getattr(model, "module", model))  # DDP and other wrappers keep the model in .module
    head = getattr(inner, "lm_head", None)
    return inner if type(head) is nn.Linear and head.bias is None and not head.weight.requires_grad else None


def can_skip_logits(model) -> bool:
    """True when :func:`token_loss` applies; a head that trains (LoRA on ``lm_head``) or has a
    bias goes through transformers' own loss."""
    return _frozen_head_lm(model) is not None


def token_loss(model, batch: dict, chunk: int = CHUNK) -> torch.Tensor:
    """The mean next-token loss of ``batch`` ({input_ids, attention_mask, labels}, labels -100
    where ignored), equal to ``model(**batch).loss``."""
    inner = _frozen_head_lm(model)
    if inner is None:
        return model(**batch).loss
    labels = batch["labels"]
    targets = torch.cat([labels[:, 1:], labels.new_full((labels.shape[0], 1), IGNORE)], dim=1)  # position t predicts t+1
    with _hidden_states_out(inner) as head:
        hidden = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    return _HeadCrossEntropy.apply(hidden.reshape(-1, hidden.shape[-1]), head.weight, targets.reshape(-1).to(hidden.device),
                                   int(chunk))
