"""The one interface every distillation method implements, and the data it may read.

A method reads only the teacher's artifacts (docs/artifacts.md, docs/architecture.md), already
joined to the student's sequence rows by ``seq_id`` and loaded as tensors (:class:`TeacherTensors`).
Methods are registered by name; the config's ``methods.<name>.type`` picks the class and the rest
of that config entry is passed as ``cfg``, which the base class parses into the method's options
dataclass (``Options``, declared in :mod:`dllm2rec.distill.spec`) as ``self.opt``. Helpers that
several methods share live in :mod:`dllm2rec.distill.common`.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from dllm2rec.distill.spec import MethodOptions, read_options
from dllm2rec.io import UserError

METHODS: dict[str, type["DistillMethod"]] = {}


def register_method(name: str):
    """Class decorator: register a method under ``name``. Its ``Options`` (the dataclass
    registered under the same name in :mod:`dllm2rec.distill.spec`) gives the class its
    ``needs`` and ``uses_teacher_at_inference``."""

    def deco(cls):
        if cls.Options.method != name:
            raise TypeError(f"method {name!r}: Options is {cls.Options.__name__}, registered for {cls.Options.method!r}")
        cls.name = name
        cls.needs = frozenset(cls.Options.needs)
        cls.uses_teacher_at_inference = bool(cls.Options.uses_teacher_at_inference)
        METHODS[name] = cls
        return cls

    return deco


def get_method(name: str) -> type["DistillMethod"]:
    import dllm2rec.distill.methods  # noqa: F401  (imports every method module so they register)

    if name not in METHODS:
        raise UserError(f"unknown distillation method {name!r}; known: {sorted(METHODS)}")
    return METHODS[name]


@dataclass
class TeacherSplit:
    """Teacher output for one split, row i belongs to the split's i-th sequence (joined by seq_id)."""

    topk_items: torch.Tensor  # [S, N] long, teacher ranking (best first), N >= 100 in real runs
    topk_dist: torch.Tensor  # [S, N] float32, L2 grounding distance of each listed item (ascending)
    target_dist: torch.Tensor  # [S] float32, distance of the generated text to the ground-truth item (Eq. 7)
    gen_emb: torch.Tensor | None = None  # [S, d_t] float32, grounding embedding of the generated text
    text_gen_emb: torch.Tensor | None = None  # [S, d_e] float32, the text encoder's embedding of the generated text
    knowledge_user_emb: torch.Tensor | None = None  # [S, d_e] float32, KAR: the row's user's knowledge (0: none)
    # teacher coverage: bool [S_split] over the student's rows of the split, None when the teacher covers
    # every row. When set, the tensors above hold only the covered rows (S = covered.sum()), and the trainer
    # gives a method only those rows (``DistillContext`` and ``Batch.rows`` renumbered; student/train.py).
    covered: torch.Tensor | None = None


@dataclass
class TeacherTensors:
    item_emb: torch.Tensor  # [n, d_t] float32, title embedding z_i of every item (Eq. 12)
    splits: dict[str, TeacherSplit] = field(default_factory=dict)  # "train", "valid", "test"
    text_item_emb: torch.Tensor | None = None  # [n, d_e] float32, the text encoder's embedding of every title
    knowledge_item_emb: torch.Tensor | None = None  # [n, d_e] float32, KAR: each item's knowledge (0: none)


@dataclass
class DistillContext:
    """What every method may read besides the teacher. Row i of ``train_*`` is the i-th train
    row of sequences.parquet (file order), the same row order as ``TeacherSplit`` and ``Batch.rows``.
    Under partial teacher coverage the ``train_*`` rows are only the covered ones (still in file
    order), so a method sees the covered rows alone; ``item_counts`` stays the whole split's."""

    n_items: int
    hidden: int
    teacher: TeacherTensors | None  # None for method "none"
    item_counts: torch.Tensor  # [n] long, how often each item is a target in train (popularity)
    train_history: torch.Tensor  # [S_train, L] long, right-padded with n_items
    train_lengths: torch.Tensor  # [S_train] long
    train_target: torch.Tensor  # [S_train] long
    seed: int = 0
    max_epochs: int = 0  # the trainer's ``epochs`` (for methods with warm-up or schedules)


@dataclass
class Batch:
    split: str  # "train", "valid" or "test": which TeacherSplit ``rows`` index
    rows: torch.Tensor  # [B] long, row numbers within the split
    history: torch.Tensor  # [B, L] long, right-padded with n_items
    lengths: torch.Tensor  # [B] long
    target: torch.Tensor  # [B] long
    negative: torch.Tensor | None = None  # [B] long, the sampled negative of Eq. 3 (train only)


class DistillMethod(nn.Module):
    """Default: no distillation. Subclasses override what they need.

    ``Options``: the method's options dataclass (:mod:`dllm2rec.distill.spec`); ``__init__``
    parses ``cfg`` into ``self.opt`` (unknown keys and wrong types are UserErrors).
    ``needs`` (from ``Options``): which teacher artifacts the method reads, so the workflow
    declares exactly those inputs: a subset of {"ranks", "item_embeddings", "generated_embeddings"}.
    ``uses_teacher_at_inference`` (from ``Options``): True when evaluation needs teacher output
    for the evaluated sequences (KAR); Table 6 then counts the teacher's cost at inference.
    """

    name: str = "base"
    Options: type[MethodOptions] = MethodOptions
    needs: frozenset[str] = frozenset()
    uses_teacher_at_inference: bool = False
    # fused training on a CPU (dllm2rec/student/fused.py) sets this to the distinct items of the
    # group's batch before each step: torch.unique has no vmap rule
    batch_items: torch.Tensor | None = None

    def __init__(self, cfg: dict, ctx: DistillContext, student: nn.Module):
        super().__init__()
        self.cfg = dict(cfg)
        self.opt = self.parse_options(self.cfg)
        self.ctx = ctx

    @classmethod
    def parse_options(cls, cfg: dict, name: str | None = None):
        """``cfg`` (a ``methods.<name>`` entry, ``name`` defaulting to the type) as this method's
        ``Options``."""
        return read_options(cls.Options, cfg, name or cls.name)

    @classmethod
    def required_parts(cls, cfg: dict) -> frozenset[str]:
        """The teacher artifacts this config of the method reads (``needs`` unless an ablation
        switches a part off, e.g. DLLM2Rec with ``embedding: false`` needs no item embeddings)."""
        return cls.parse_options(cfg).teacher_parts()

    def rng_state(self):
        """The method's own random generators (``self.sampler``), saved in training checkpoints so
        that a resumed run samples exactly what an uninterrupted one would."""
        sampler = getattr(self, "sampler", None)
        return None if sampler is None else sampler.get_state()

    def set_rng_state(self, state) -> None:
        sampler = getattr(self, "sampler", None)
        if sampler is not None and state is not None:
            sampler.set_state(state)

    def item_table(self, student) -> torch.Tensor:
        """Input item embeddings [n+1, d] fed to the backbone (DLLM2Rec's e_i = b_i + w g(z_i))."""
        return student.item_emb.weight

    def item_table_for(self, student, history: torch.Tensor) -> torch.Tensor:
        """The table a training step uses for ``history`` [B, L]. Only the rows that ``history``
        indexes need be right, so a method may compute just those (DLLM2Rec projects only the
        batch's items). Default: :meth:`item_table`. Evaluation uses :meth:`item_table`."""
        return self.item_table(student)

    def adjust_state(self, state: torch.Tensor, batch: Batch) -> torch.Tensor:
        """Sequence representation after the backbone, before scoring (KAR, LLM-CF)."""
        return state

    def scores(self, student, state: torch.Tensor, batch: Batch) -> torch.Tensor:
        """Scores [B, n] of every item for ``state`` (after :meth:`adjust_state`); KAR adds its
        item-knowledge term. Default: the student's own ``scores``."""
        return student.scores(state)

    def loss(self, batch: Batch, scores: torch.Tensor, state: torch.Tensor, student, epoch: int) -> torch.Tensor:
        """The distillation term, already multiplied by its own weight (e.g. lambda_d).

        Called only for training batches (``batch.split == "train"``, ``batch.negative`` set);
        ``epoch`` is 0-based. ``scores`` [B, n] and ``state`` [B, d] carry gradients."""
        return scores.new_zeros(())
