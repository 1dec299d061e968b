"""What each distillation method takes and reads, without torch.

Every method declares its options once, here, as a frozen dataclass registered under the
method's ``type`` with :func:`options`: one typed field per config key, its default the value
the method uses when the key is left out. The dataclass also says which teacher artifacts the
method reads (``needs``, or :meth:`MethodOptions.teacher_parts` when an option switches a part
off) and whether evaluation needs teacher output for the evaluated sequences
(``uses_teacher_at_inference``).

The method class (``dllm2rec/distill/<type>.py``) attaches its dataclass as ``Options`` and the
base class parses the config entry into ``self.opt``. The workflow asks
:func:`teacher_needs` which artifacts a run reads while it builds the DAG, so this module
imports neither torch nor any method module. The config schema's keys of each method type
(:mod:`dllm2rec.schema`) and the method's name in the tables (``display``) come from here;
``config.yaml`` and ``docs/methods.md`` repeat the defaults, and ``tests/test_method_options.py``
checks that they agree with the dataclasses. The helpers (types with bounds, parsing) are those
of :mod:`dllm2rec.settings`, which declares the other settings the same way.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, ClassVar, Literal

from dllm2rec.io import UserError
from dllm2rec.settings import Fraction, NonNegative, NonNegativeInt, Positive, PositiveInt, Schema, field_defaults
from dllm2rec.settings import parse
from dllm2rec.settings import field_types as option_types

Share = Annotated[float, Schema(exclusiveMinimum=0, maximum=1)]  # a fraction in (0, 1]

SPLITS = ("train", "valid", "test")
TEACHER_PARTS = ("ranks", "item_embeddings", "generated_embeddings", "text_item_embeddings",
                 "text_generated_embeddings", "knowledge_item_embeddings", "knowledge_user_embeddings")


# the knowledge-text parts LLM-CF reads per ``encoder`` (dllm2rec/distill/knowledge.py)
_ENCODER_PARTS = {
    "teacher": frozenset({"item_embeddings", "generated_embeddings"}),
    "minilm": frozenset({"text_item_embeddings", "text_generated_embeddings"}),
}


RESERVED_KEYS = ("type", "extends", "search")  # config keys every entry may carry; not options

OPTIONS: dict[str, type["MethodOptions"]] = {}


def options(name: str, display: str):
    """Class decorator: register a dataclass as the options of method ``name``, which the tables
    call ``display``."""

    def deco(cls):
        cls.method, cls.display = name, display
        OPTIONS[name] = cls
        return cls

    return deco


@dataclass(frozen=True)
class MethodOptions:
    """Base of every method's options (a method without options uses it as is)."""

    method: ClassVar[str] = "base"
    display: ClassVar[str] = "base"  # the method's name in the tables (Table 5's "+RD", ...)
    needs: ClassVar[frozenset[str]] = frozenset()  # subset of TEACHER_PARTS
    uses_teacher_at_inference: ClassVar[bool] = False
    # False: the method needs teacher output for every training sequence (its model reads it for
    # each row, not only its loss), so it refuses a teacher with partial train coverage (docs/teacher.md)
    partial_coverage: ClassVar[bool] = True
    # Fused training (dllm2rec/student/fused.py, docs/students.md): a method whose training step
    # runs under torch.func.vmap (no value read back, no draw from its own generators) trains the
    # members of a group as one stacked model. The members of one stacked group may differ in
    # seed, the student's lr and weight_decay, and the options named in ``fused_scalars`` (the
    # method keeps them as tensors); every other option is equal within a group.
    fusable: ClassVar[bool] = False
    fused_scalars: ClassVar[tuple[str, ...]] = ()

    def teacher_parts(self) -> frozenset[str]:
        """The teacher artifacts this configuration reads (``needs`` unless an option drops one)."""
        return frozenset(self.needs)

    def can_fuse(self) -> bool:
        """True when this configuration's training step can run stacked (see ``fusable``)."""
        return self.fusable


def option_defaults(cls: type[MethodOptions]) -> dict[str, object]:
    return field_defaults(cls)


def options_class(method_type: str) -> type[MethodOptions]:
    if method_type not in OPTIONS:
        raise UserError(f"unknown distillation method type {method_type!r}; known: {', '.join(sorted(OPTIONS))}")
    return OPTIONS[method_type]


def read_options(cls: type[MethodOptions], cfg: dict, name: str) -> MethodOptions:
    """``cfg`` (a ``methods.<name>`` entry) as an instance of ``cls``; missing keys take their
    defaults, ``type``, ``extends`` and ``search`` are skipped. Unknown keys and values of the wrong type
    raise a UserError naming ``methods.<name>.<key>``."""
    return parse(cls, cfg, f"methods.{name}", skip=RESERVED_KEYS, what=f"option of method type {cls.method!r}")


def parse_options(cfg: dict, name: str | None = None) -> MethodOptions:
    """The options of a method config entry, its ``type`` picking the dataclass (see
    :func:`read_options`; ``name``: the entry's name under ``methods``, default its type)."""
    if "type" not in cfg:
        raise UserError(f"methods.{name or '?'} has no `type`")
    return read_options(options_class(cfg["type"]), cfg, name or cfg["type"])


def teacher_needs(method_cfg: dict, name: str | None = None) -> dict[str, list[str]]:
    """{teacher part: [splits]} that a training run with this (``extends``-resolved) method
    config reads; empty when the method needs no teacher."""
    opt = parse_options(method_cfg, name)
    splits = list(SPLITS) if opt.uses_teacher_at_inference else ["train"]
    return {part: list(splits) for part in sorted(opt.teacher_parts())}


def needs_full_coverage(method_cfg: dict, name: str | None = None) -> bool:
    """True when the method reads teacher output for every training sequence and so refuses a
    teacher whose ``generation.train_coverage`` is partial (KAR, LLM-CF; docs/teacher.md)."""
    opt = parse_options(method_cfg, name)
    return bool(opt.teacher_parts()) and not opt.partial_coverage


# --------------------------------------------------------------------------------------------
# One dataclass per method, in the order of the tables (`none`, the baselines, DLLM2Rec last).
# Defaults and their sources are documented in docs/methods.md (and the method's docstring).
# --------------------------------------------------------------------------------------------


@options("none", "+None")
@dataclass(frozen=True)
class NoneOptions(MethodOptions):
    """The plain student: no options, no teacher."""

    fusable: ClassVar[bool] = True


@options("hint", "+Hint")
@dataclass(frozen=True)
class HintOptions(MethodOptions):
    needs: ClassVar[frozenset[str]] = frozenset({"item_embeddings"})

    lambda_kd: NonNegative = 0.1
    projector: Literal["linear", "mlp"] = "linear"
    normalize: bool = True
    items: Literal["batch", "all"] = "batch"


@options("htd", "+HTD")
@dataclass(frozen=True)
class HTDOptions(MethodOptions):
    needs: ClassVar[frozenset[str]] = frozenset({"item_embeddings"})

    lambda_kd: NonNegative = 0.001  # lmbda_TD (Topology_Distillation_KDD21 notebook)
    alpha: Fraction = 0.5  # TD share of α·TD + (1-α)·GA (notebook)
    n_groups: PositiveInt = 30  # K (notebook: HTD(..., K=30, choice='second'))
    tau_start: Positive = 1.0  # Gumbel-softmax temperature, run.py run_HTD: current_T = 1
    tau_end: Positive = 1e-10  # run.py: T_annealing(epoch, max_epoch, 1, 1e-10)
    teacher_dim: NonNegativeInt = 200  # teacher space cut to its top principal components (the released teacher's width); 0: all


@options("rd", "+RD")
@dataclass(frozen=True)
class RDOptions(MethodOptions):
    needs: ClassVar[frozenset[str]] = frozenset({"ranks"})
    fusable: ClassVar[bool] = True
    fused_scalars: ClassVar[tuple[str, ...]] = ("lambda_kd",)

    lambda_kd: NonNegative = 1.0  # teach_alpha (rank_distill distill_caser.py)
    k: PositiveInt = 10  # K
    lam: Positive = 1.0  # lamda: position-weight sharpness
    mu: NonNegative = 0.1  # mu: ranking-discrepancy sharpness
    dynamic_start_epoch: NonNegativeInt = 10  # dynamic_start_epoch: hybrid weights from this 0-based epoch on


@options("cd", "+CD")
@dataclass(frozen=True)
class CDOptions(MethodOptions):
    needs: ClassVar[frozenset[str]] = frozenset({"ranks"})
    fusable: ClassVar[bool] = True
    fused_scalars: ClassVar[tuple[str, ...]] = ("lambda_kd",)

    lambda_kd: NonNegative = 1.0  # UnKD/parse.py --kd_weight
    n_samples: PositiveInt = 50  # n_distill (UnKD/sample.py, as t1, t2, lamda)
    lam: NonNegative = 0.05  # lamda = 1/20
    t1: Positive = 2.0
    t2: float = 0.0
    top_n: PositiveInt = 100  # the teacher artifact's N (there 3000)


@options("rrd", "+RRD")
@dataclass(frozen=True)
class RRDOptions(MethodOptions):
    needs: ClassVar[frozenset[str]] = frozenset({"ranks"})

    lambda_kd: NonNegative = 0.001  # URRD_lmbda (DE-RRD_CIKM20 main_URRD.py)
    k: PositiveInt = 40  # U_K: interesting items
    l: PositiveInt = 40  # noqa: E741 (U_L: uninteresting items)
    temp: Positive = 10.0  # U_T: rank temperature


@options("dcd", "+DCD")
@dataclass(frozen=True)
class DCDOptions(MethodOptions):
    needs: ClassVar[frozenset[str]] = frozenset({"ranks"})

    lambda_user: NonNegative = 0.001  # UCD_lmbda: not in the released code; RRD's λ (ours)
    lambda_item: NonNegative = 0.001  # ICD_lmbda: likewise
    n_samples: PositiveInt = 10  # p_n: under-/over-estimated samples per kind (ours)
    eps: NonNegative = 0.1  # ep: rank-discrepancy slope (ours)
    refresh_every: PositiveInt = 3  # run_dcd.py: discrepancies recomputed when epoch % 3 == 0
    top_n: PositiveInt = 100  # teacher list length on both sides (released: 500; ours: the teacher's N)


@options("unkd", "+UnKD")
@dataclass(frozen=True)
class UnKDOptions(MethodOptions):
    needs: ClassVar[frozenset[str]] = frozenset({"ranks"})

    lambda_kd: NonNegative = 1.0  # kd_weight (UnKD README command)
    n_groups: PositiveInt = 4  # split_group (README command)
    n_samples: PositiveInt = 30  # sample_num: pairs per sequence over all groups (README command)
    temp: Positive = 20.0  # rank weights exp(-(1+i)/20) (sample.py get_rank_negItems)


@options("kar", "KAR")
@dataclass(frozen=True)
class KAROptions(MethodOptions):
    # KAR's knowledge vectors (dllm2rec/teacher/knowledge.py): one per item, and per sequence the
    # vector of its user's knowledge, made from the user's training interactions only
    needs: ClassVar[frozenset[str]] = frozenset({"knowledge_item_embeddings", "knowledge_user_embeddings"})
    # every evaluated sequence reads its user's knowledge vector (never a teacher prediction)
    uses_teacher_at_inference: ClassVar[bool] = True

    n_shared: NonNegativeInt = 2
    n_specific: PositiveInt = 6
    expert_hidden: PositiveInt = 128
    dropout: Fraction = 0.0
    augment_items: bool = True
    augment_user: bool = True


@options("llmcf", "LLM-CF")
@dataclass(frozen=True)
class LLMCFOptions(MethodOptions):
    needs: ClassVar[frozenset[str]] = frozenset({"item_embeddings", "generated_embeddings"})
    uses_teacher_at_inference: ClassVar[bool] = False  # retrieval reads train generations only
    partial_coverage: ClassVar[bool] = False  # each train row's demonstrations are fixed per row before training

    encoder: Literal["teacher", "minilm"] = "teacher"
    n_neighbors: PositiveInt = 4  # --num_aug 4 (retrieval_task/src_code/main_aug.py)
    base_fraction: Share = 0.1  # readme.md: 1/10 of the train sequences
    icl_weight: NonNegative = 0.1  # models/SASREC.py: user_emb + 0.1*aug_feat
    n_layers: PositiveInt = 2  # ModelArgs.n_layers (models/transformer_decoder.py)
    n_heads: PositiveInt = 2  # decoder_nhead (config/*/SASREC_aug.yaml)
    chunk: PositiveInt = 256  # ours; speed only

    def teacher_parts(self) -> frozenset[str]:
        return _ENCODER_PARTS[self.encoder]


@options("dllm2rec", "+DLLM2Rec")
@dataclass(frozen=True)
class DLLM2RecOptions(MethodOptions):
    needs: ClassVar[frozenset[str]] = frozenset({"ranks", "item_embeddings"})
    fusable: ClassVar[bool] = True
    fused_scalars: ClassVar[tuple[str, ...]] = ("lambda_d",)

    variant: Literal["paper", "official"] = "paper"
    lambda_d: NonNegative = 0.7
    k: PositiveInt = 10
    beta: Positive = 1.0
    gamma_p: NonNegative = 0.3
    gamma_c: NonNegative = 0.5
    gamma_o: NonNegative = 0.1
    ed_weight: NonNegative = 0.3
    projector: Literal["linear", "mlp"] = "linear"
    ranking: bool = True
    use_wp: bool = True
    use_wc: bool = True
    use_wo: bool = True
    embedding: bool = True
    offset: bool = True
    embedding_method: Literal["collaborative", "hint", "htd"] = "collaborative"

    def teacher_parts(self) -> frozenset[str]:
        return frozenset(({"ranks"} if self.ranking else set()) | ({"item_embeddings"} if self.embedding else set()))

    def can_fuse(self) -> bool:
        # Table 8's swaps run Hint's / HTD's embedding loss, which are not fusable
        return not self.embedding or self.embedding_method == "collaborative"
