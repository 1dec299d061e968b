"""Every setting's type, bounds and default, declared once, without torch.

Each section of the config that the code reads (a dataset's scalar settings, the student, each
backbone, a teacher's scalar settings and its ``lora``, ``sft``, ``generation``, ``knowledge`` and
``grounding``, a recommender teacher's ``recommender``) is a frozen dataclass here: one typed field per key, its default the
value used when the key is left out, its bounds in its type (:data:`PositiveInt`,
:data:`Fraction`, ...). The distillation methods declare their options in the same style in
:mod:`dllm2rec.distill.spec`, with the helpers of this module.

The code reads a section through :func:`parse` (unknown keys and wrong types are a UserError
naming the key), so a default has one home. :mod:`dllm2rec.schema` builds the config schema's
properties of these sections from the dataclasses (``workflow/schemas/config.schema.yaml``
holds only their descriptions). The backbones are registered here by name
(:data:`BACKBONES`): the workflow, the schema and the tables take the names from it, and
``dllm2rec/student/<name>.py`` implements each.
"""
from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from typing import Annotated, ClassVar, Literal, Optional

from dllm2rec.io import UserError

# --- bounds ride on the type: Annotated[<type>, Schema(<JSON Schema keywords>)] ----------------
class Schema(dict):
    """JSON Schema keywords of a setting beyond its type (bounds, a fixed schema); hashable, as
    ``Annotated`` inside ``Optional`` needs."""

    def __hash__(self):
        return hash(repr(self))


PositiveInt = Annotated[int, Schema(minimum=1)]
NonNegativeInt = Annotated[int, Schema(minimum=0)]
NonNegative = Annotated[float, Schema(minimum=0)]
Positive = Annotated[float, Schema(exclusiveMinimum=0)]
Fraction = Annotated[float, Schema(minimum=0, maximum=1)]


def unwritten(default, **kw):
    """A field whose default the schema does not write into the config: a config that leaves the
    key out keeps the rules' params it had before the key existed (and so its results)."""
    return field(default=default, metadata={"schema_default": False}, **kw)


class Settings:
    """Base of the sections below (marks them as nested sections for :func:`parse` and the schema)."""

    # True: the schema writes this section's defaults into the config (the rules' params carry
    # them); False: the section's keys are optional overrides, their defaults applied by the code
    fills_defaults: ClassVar[bool] = True
    # the section's keys that are not settings here: the schema file declares them (their readers
    # check them)
    other_keys: ClassVar[tuple[str, ...]] = ()


def is_section(tp) -> bool:
    return isinstance(tp, type) and issubclass(tp, Settings) and dataclasses.is_dataclass(tp)


def field_types(cls, extras: bool = False) -> dict[str, object]:
    """{field name: resolved annotation} of a settings or options dataclass, in declaration
    order (``extras``: keep the ``Annotated`` bounds)."""
    hints = typing.get_type_hints(cls, include_extras=extras)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def field_defaults(cls) -> dict[str, object]:
    return {f.name: f.default if f.default is not dataclasses.MISSING else f.default_factory()
            for f in dataclasses.fields(cls)}


def _optional(tp):
    """``X`` for ``Optional[X]`` / ``X | None``, else None."""
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1 and len(typing.get_args(tp)) == 2:
            return args[0]
    return None


def check_value(where: str, tp, value):
    """``value`` converted to ``tp`` (int, float, bool, str, a Literal, ``Optional[X]``,
    ``tuple[str, ...]``, ``dict``, a section dataclass, or ``object``: any, checked by its
    reader), or a UserError naming ``where``. Bounds are the schema's to check."""
    inner = _optional(tp)
    if inner is not None:
        return None if value is None else check_value(where, inner, value)
    if typing.get_origin(tp) is Literal:
        choices = typing.get_args(tp)
        if not any(value == c and type(value) is type(c) for c in choices):
            raise UserError(f"{where} must be one of {', '.join(map(str, choices))}; got {value!r}")
        return value
    if typing.get_origin(tp) is tuple:
        item = typing.get_args(tp)[0]
        if not isinstance(value, (list, tuple)):
            raise UserError(f"{where} must be a list; got {value!r}")
        return tuple(check_value(f"{where}[{i}]", item, v) for i, v in enumerate(value))
    if is_section(tp):
        if not isinstance(value, dict):
            raise UserError(f"{where} must be a mapping of its settings; got {value!r}")
        return parse(tp, value, where)
    if tp is object:
        return value
    if tp is dict:
        if not isinstance(value, dict):
            raise UserError(f"{where} must be a mapping; got {value!r}")
        return dict(value)
    if tp is bool:
        if not isinstance(value, bool):
            raise UserError(f"{where} must be true or false; got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise UserError(f"{where} must be an integer; got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise UserError(f"{where} must be a number; got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise UserError(f"{where} must be a string; got {value!r}")
        return value
    raise TypeError(f"{where}: unsupported setting type {tp!r}")


def parse(cls, cfg: dict | None, where: str, skip: tuple[str, ...] = (), what: str = "key"):
    """``cfg`` (a config section) as an instance of ``cls``; missing keys take their defaults,
    keys in ``skip`` are left to the caller. Unknown keys (``what`` they would be) and values of
    the wrong type raise a UserError naming ``<where>.<key>``."""
    hints = field_types(cls)
    values = {}
    for key, value in (cfg or {}).items():
        if key in skip:
            continue
        if key not in hints:
            raise UserError(f"{where}.{key}: unknown {what} (known: {', '.join(hints) or 'none'})")
        values[key] = check_value(f"{where}.{key}", hints[key], value)
    return cls(**values)


# --- datasets ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class DatasetSettings(Settings):
    """``datasets.<name>``'s scalar settings (``source``, ``paths``, ``fields`` and ``sample``
    are the data stage's: dllm2rec/data/)."""

    other_keys: ClassVar[tuple[str, ...]] = ("source", "sample", "paths", "fields")

    sample_rule: Literal["amazon", "movielens"] = "movielens"
    noun: Annotated[str, Schema(minLength=1, pattern="^[A-Za-z][A-Za-z0-9 -]*$")] = "movie"
    max_history: PositiveInt = 10
    min_title_chars: NonNegativeInt = 1
    drop_duplicates: Optional[bool] = None  # None: what BIGRec's preprocessing does for the rule


# --- the student ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class StudentSettings(Settings):
    """``student``: the trainer's settings (docs/students.md); ``backbones`` are read apart."""

    other_keys: ClassVar[tuple[str, ...]] = ("backbones",)

    # the paper (§4.1.4) and the released main.py (docs/students.md has the sources)
    hidden: PositiveInt = 64
    dropout: Fraction = 0.1
    lr: Positive = 1.0e-3
    batch_size: PositiveInt = 256
    weight_decay: NonNegative = 0.0
    # early stopping on validation NDCG@20 (docs/protocol.md)
    epochs: PositiveInt = 100
    patience: PositiveInt = 10
    # speed only
    eval_batch_size: PositiveInt = 1024
    device: Annotated[str, Schema(enum=["auto", "cpu", "cuda"])] = "auto"  # the trainer takes any torch device
    compile: bool = False
    # the workflow's, not the trainer's: fused groups and the jobs' Slurm resources
    fuse: bool = True
    fuse_members: Annotated[int, Schema(minimum=1, maximum=128)] = 64
    gres: str = ""


# the student keys that change the speed of a run, not its results (not in the run's params)
SPEED_KEYS = ("device", "eval_batch_size", "fuse", "fuse_members", "gres")


# --- backbones: dllm2rec/student/<name>.py implements each ----------------------------------------
@dataclass(frozen=True)
class BackboneOptions(Settings):
    """``student.backbones.<name>``: a backbone's own options (its constructor's keywords)."""

    fills_defaults: ClassVar[bool] = False
    name: ClassVar[str] = "base"
    display: ClassVar[str] = "base"  # the backbone's name in the tables


BACKBONES: dict[str, type[BackboneOptions]] = {}


def backbone(name: str, display: str):
    """Class decorator: register the options of backbone ``name`` (shown as ``display``)."""

    def deco(cls):
        cls.name, cls.display = name, display
        BACKBONES[name] = cls
        return cls

    return deco


def backbone_options(name: str, cfg: dict | None) -> BackboneOptions:
    if name not in BACKBONES:
        raise UserError(f"unknown backbone {name!r}; known: {', '.join(BACKBONES)}")
    return parse(BACKBONES[name], cfg, f"student.backbones.{name}")


def backbone_name(name: str) -> str:
    """How the tables name a backbone (its key when it is not registered)."""
    return BACKBONES[name].display if name in BACKBONES else name


# the backbone the paper singles out: Tables 1-3 compare the teacher with its plain student,
# Table 6 times its DLLM2Rec student, Figure 2 and Tables 7-8 run on it (by default)
REFERENCE_BACKBONE = "dros"


@backbone("gru4rec", "GRU4Rec")
@dataclass(frozen=True)
class GRU4RecOptions(BackboneOptions):
    """No options of its own."""


@backbone("sasrec", "SASRec")
@dataclass(frozen=True)
class SASRecOptions(BackboneOptions):
    num_heads: PositiveInt = 1
    num_blocks: PositiveInt = 1


@backbone("dros", "DROS")
@dataclass(frozen=True)
class DROSOptions(SASRecOptions):
    alpha: NonNegative = 0.5  # the authors' DLLM2Rec run command (docs/students.md)
    beta: Positive = 1.0
    ps_power: NonNegative = 0.05


# --- the teacher -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class LoraSettings(Settings):
    r: PositiveInt = 8
    alpha: PositiveInt = 16
    dropout: Fraction = 0.05
    target_modules: Annotated[tuple[str, ...], Schema(minItems=1)] = ("q_proj", "v_proj")


@dataclass(frozen=True)
class SFTSettings(Settings):
    """BIGRec's LoRA fine-tuning (docs/teacher.md; configs/paper.yaml has the paper's values)."""

    # the examples: sequences sampled per split, prompts cut to cutoff_len tokens
    train_samples: PositiveInt = 1024
    valid_samples: PositiveInt = 256
    cutoff_len: PositiveInt = 512
    # AdamW with linear warm-up and decay; batch_size = micro_batch_size x accumulation x GPUs
    lr: Positive = 1.0e-4
    batch_size: PositiveInt = 128
    micro_batch_size: PositiveInt = 4
    warmup_steps: NonNegativeInt = 20
    # early stopping on the validation loss
    epochs: PositiveInt = 50
    patience: PositiveInt = 5
    seed: int = 42


COVERAGE_SCHEMA = Schema(oneOf=[
    {"type": "string", "enum": ["all"]},
    {"type": "integer", "minimum": 1},
    {"type": "number", "exclusiveMinimum": 0, "maximum": 1, "not": {"type": "integer"}},
])


@dataclass(frozen=True)
class GenerationSettings(Settings):
    num_beams: PositiveInt = 4
    max_new_tokens: PositiveInt = 128
    batch_size: PositiveInt = 8
    engine: Literal["ours", "hf"] = "ours"
    batch_tokens: PositiveInt = 16384
    length_penalty: float = 1.0
    early_stopping: Literal[False, True, "never"] = False
    cutoff_len: Optional[PositiveInt] = None  # None: sft.cutoff_len
    # all, a count or a fraction (dllm2rec/teacher/coverage.py checks it)
    train_coverage: Annotated[object, COVERAGE_SCHEMA] = unwritten("all")
    train_coverage_seed: int = 0
    constrained: bool = unwritten(False)

    def cutoff(self, sft: SFTSettings) -> int:
        """The prompt token budget: ``cutoff_len``, else the fine-tuning's."""
        return self.cutoff_len or sft.cutoff_len


@dataclass(frozen=True)
class KnowledgeSettings(Settings):
    max_new_tokens: PositiveInt = 16
    batch_size: PositiveInt = 64


@dataclass(frozen=True)
class GroundingSettings(Settings):
    topn: Annotated[int, Schema(minimum=10)] = 100
    batch_size: PositiveInt = 64
    popularity_gamma: NonNegative = 0.0


@dataclass(frozen=True)
class RecommenderSettings(Settings):
    """``teachers.<name>.recommender`` (type recommender; dllm2rec/teacher/recommender.py);
    ``student``: the teacher's training settings where they differ from ``student``'s."""

    backbone: Annotated[str, Schema({"$ref": "#/$defs/backbone"})] = "sasrec"  # a key of BACKBONES
    train_split: Literal["whole", "sampled"] = "whole"
    seed: int = 0
    student: dict = field(default_factory=dict)


# the student keys a recommender teacher may override
RECOMMENDER_STUDENT_KEYS = ("hidden", "dropout", "lr", "batch_size", "weight_decay", "epochs", "patience")

TEACHER_TYPES = ("bigrec", "recommender", "files")  # docs/teacher.md, "Kinds of teacher"


@dataclass(frozen=True)
class TeacherSettings(Settings):
    """``teachers.<name>``: what the teacher's rules read (``files`` and ``recommender`` are
    read by :mod:`dllm2rec.teacher.kinds`)."""

    other_keys: ClassVar[tuple[str, ...]] = ("recommender", "files")

    type: Literal["bigrec", "recommender", "files"] = "bigrec"
    base_model: Optional[str] = None
    lora: LoraSettings = LoraSettings()
    sft: SFTSettings = SFTSettings()
    generation: GenerationSettings = GenerationSettings()
    knowledge: KnowledgeSettings = KnowledgeSettings()
    grounding: GroundingSettings = GroundingSettings()
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    sft_gpus: PositiveInt = 1
    mem_mb: int = 32000


def teacher_section(cls, params: dict, key: str, teacher: str = "<name>"):
    """``params[key]`` (a teacher rule's params, as paths.smk writes them) read as ``cls``."""
    return parse(cls, params.get(key), f"teachers.{teacher}.{key}")


def teacher_dtype(params: dict) -> str:
    """The weights' dtype of a teacher rule's params (``dtype``, default auto)."""
    return check_value("teachers.<name>.dtype", field_types(TeacherSettings)["dtype"],
                       params.get("dtype", TeacherSettings.dtype))
