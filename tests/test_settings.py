"""Every setting is declared once (dllm2rec/settings.py, and the methods' options in
dllm2rec/distill/spec.py): the config schema's keys, types, bounds and defaults are made from the
declarations, the code reads the same typed objects, and a method or backbone registered there is
known to the schema and the tables without another edit."""
from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass
from typing import Literal

import jsonschema
import pytest
import yaml

from dllm2rec import schema, settings, tables
from dllm2rec.distill import spec
from dllm2rec.io import UserError
from dllm2rec.settings import (BACKBONES, GenerationSettings, GroundingSettings, KnowledgeSettings, LoraSettings,
                               SFTSettings, StudentSettings, TeacherSettings)
from workflow_utils import ROOT

CONFIG = yaml.safe_load((ROOT / "config.yaml").read_text())


def minimal_config() -> dict:
    """config.yaml with every section the schema fills left empty."""
    cfg = copy.deepcopy(CONFIG)
    cfg["student"] = {}
    cfg["teachers"] = {"t": {"base_model": "some/model"}}
    cfg["tables"] = {"teacher": "t", "datasets": ["ml-100k"]}
    return cfg


def test_the_schema_writes_the_declared_defaults():
    cfg = minimal_config()
    cfg["tables"]["figure2"] = {"lambda_d": [0.9]}
    cfg = schema.validate(cfg)
    assert cfg["tables"]["figure2"]["backbone"] == settings.REFERENCE_BACKBONE == "dros"
    student = {k: v for k, v in cfg["student"].items() if k != "backbones"}
    assert student == dataclasses.asdict(StudentSettings())
    assert student["patience"] == 10 and student["hidden"] == 64  # one home: StudentSettings
    assert cfg["student"]["backbones"] == {name: {} for name in BACKBONES}
    assert cfg["tables"]["backbones"] == ["gru4rec", "sasrec", "dros"] == list(BACKBONES)
    teacher = cfg["teachers"]["t"]
    for key, cls in (("lora", LoraSettings), ("sft", SFTSettings), ("generation", GenerationSettings),
                     ("knowledge", KnowledgeSettings), ("grounding", GroundingSettings)):
        assert settings.parse(cls, teacher[key], key) == cls(), key
    assert teacher["grounding"]["topn"] == 100 and teacher["dtype"] == "auto" and teacher["type"] == "bigrec"
    assert teacher["lora"]["target_modules"] == ["q_proj", "v_proj"]
    # keys whose default is not written (the default's rule params stay as they were)
    assert "train_coverage" not in teacher["generation"] and "constrained" not in teacher["generation"]
    assert "cutoff_len" not in teacher["generation"]
    assert GenerationSettings().cutoff(SFTSettings()) == 512 and GenerationSettings(cutoff_len=64).cutoff(SFTSettings()) == 64


def test_the_schema_takes_types_bounds_and_enums_from_the_declarations():
    full = schema.config_schema()
    student = full["properties"]["student"]["properties"]
    assert student["patience"] == {"description": student["patience"]["description"], "type": "integer",
                                   "minimum": 1, "default": 10}
    assert student["dropout"] == {"type": "number", "minimum": 0, "maximum": 1, "default": 0.1}
    assert student["device"] == {"type": "string", "enum": ["auto", "cpu", "cuda"], "default": "auto"}
    teacher = full["$defs"]["teacher"]["properties"]
    assert teacher["dtype"]["enum"] == ["auto", "float32", "bfloat16", "float16"]
    from dllm2rec.teacher.model import DTYPES
    assert list(DTYPES) == teacher["dtype"]["enum"]
    assert teacher["generation"]["properties"]["early_stopping"]["enum"] == [False, True, "never"]
    assert teacher["grounding"]["properties"]["topn"]["minimum"] == 10
    dros = full["properties"]["student"]["properties"]["backbones"]["properties"]["dros"]["properties"]
    assert set(dros) == {"num_heads", "num_blocks", "alpha", "beta", "ps_power"}
    assert "default" not in dros["alpha"] and dros["beta"]["exclusiveMinimum"] == 0
    assert full["$defs"]["backbone"] == {"enum": list(BACKBONES)}
    recommender = teacher["recommender"]["properties"]
    assert recommender["backbone"]["$ref"] == "#/$defs/backbone" and recommender["backbone"]["default"] == "sasrec"
    assert set(recommender["student"]["properties"]) == set(settings.RECOMMENDER_STUDENT_KEYS)
    # and the schema refuses what the types refuse
    for section, key, value in (("student", "patience", 0), ("student", "device", "tpu"), ("student", "lr", 0)):
        cfg = minimal_config()
        cfg[section][key] = value
        with pytest.raises(jsonschema.ValidationError):
            schema.validate(cfg)
    cfg = minimal_config()
    cfg["teachers"]["t"]["generation"] = {"early_stopping": 1}
    with pytest.raises(jsonschema.ValidationError):
        schema.validate(cfg)


@pytest.mark.parametrize("old, new, message", [
    # a declared fact spelled again in the YAML file
    ("      patience: {description:", "      patience: {default: 20, description:",
     r"patience: \['default'\] are declared in dllm2rec/settings.py"),
    # a key the code no longer declares, left in the YAML file (the config could set it)
    ("          engine:\n", "          beam_width: {description: stale}\n          engine:\n",
     r"\['beam_width'\] are not settings of GenerationSettings"),
])
def test_the_yaml_file_holds_only_descriptions_of_declared_keys(tmp_path, old, new, message):
    text = (ROOT / "workflow/schemas/config.schema.yaml").read_text()
    assert text.count(old) == 1
    (tmp_path / "s.yaml").write_text(text.replace(old, new))
    with pytest.raises(ValueError, match=message):
        schema.config_schema(tmp_path / "s.yaml")


def test_readers_take_the_typed_settings():
    from dllm2rec.student.train import _student_params
    from dllm2rec.teacher import generate, kinds

    cfg, bb = _student_params({"student": {"patience": 3}, "method": {"type": "none"}}, "dros")
    assert cfg == StudentSettings(patience=3) and bb == settings.DROSOptions()
    cfg, bb = _student_params({"student": {"backbone": {"num_heads": 2}}, "method": {"type": "none"}}, "sasrec")
    assert bb == settings.SASRecOptions(num_heads=2)
    with pytest.raises(UserError, match=r"student\.patiance: unknown key"):
        _student_params({"student": {"patiance": 3}, "method": {"type": "none"}}, "dros")
    with pytest.raises(UserError, match=r"student\.backbones\.sasrec\.alpha: unknown key"):
        _student_params({"student": {"backbones": {"sasrec": {"alpha": 1.0}}}, "method": {"type": "none"}}, "sasrec")
    with pytest.raises(UserError, match=r"student\.hidden must be an integer"):
        _student_params({"student": {"hidden": "64"}, "method": {"type": "none"}}, "dros")
    assert generate.generation_cutoff({}) == 512
    assert generate.generation_cutoff({"sft": {"cutoff_len": 100}, "generation": {"cutoff_len": 50}}) == 50
    assert generate.constrained({}) is False
    rec = kinds.recommender_cfg({"type": "recommender", "recommender": {"train_split": "sampled"}})
    assert (rec.backbone, rec.train_split, rec.seed, rec.student) == ("sasrec", "sampled", 0, {})
    assert kinds.label({"type": "recommender", "recommender": {"backbone": "dros"}}) == "DROS (whole training split)"


def test_backbones_come_from_one_registry():
    from dllm2rec.student.base import get_backbone

    for name, opts in BACKBONES.items():
        cls = get_backbone(name)
        assert cls.name == name
        model = cls(5, max_len=3)  # the declared defaults
        assert model.hidden == StudentSettings.hidden and model.dropout.p == StudentSettings.dropout
        for key, value in dataclasses.asdict(opts()).items():
            if key in ("num_blocks",):
                assert len(model.blocks) == value
            elif key != "num_heads" and key != "ps_power":
                assert getattr(model, key) == value, (name, key)
    with pytest.raises(UserError, match="unknown backbone 'lstm'"):
        get_backbone("lstm")
    assert [settings.backbone_name(b) for b in BACKBONES] == ["GRU4Rec", "SASRec", "DROS"]


@pytest.fixture
def toy_method():
    """A method registered in-process, as a new method's options would be in spec.py."""

    @spec.options("toy", "+Toy")
    @dataclass(frozen=True)
    class ToyOptions(spec.MethodOptions):
        needs = frozenset({"ranks"})
        weight: spec.NonNegative = 0.5
        mode: Literal["a", "b"] = "a"

    try:
        yield ToyOptions
    finally:
        del spec.OPTIONS["toy"]


def test_a_registered_method_is_known_to_the_schema_and_the_tables(toy_method):
    full = schema.config_schema()
    assert "toy" in full["$defs"]["method_type"]["enum"]
    branch = next(b["then"] for b in full["properties"]["methods"]["additionalProperties"]["allOf"]
                  if b["if"]["properties"]["type"]["const"] == "toy")
    assert branch["properties"] == {"weight": {"type": "number", "minimum": 0}, "mode": {"enum": ["a", "b"]}}
    cfg = minimal_config()
    cfg["methods"]["toy-strong"] = {"type": "toy", "weight": 2.0, "mode": "b"}
    schema.validate(cfg)
    for bad in ({"weight": -1.0}, {"mode": "c"}, {"wieght": 1.0}):
        cfg = minimal_config()
        cfg["methods"]["toy-bad"] = {"type": "toy", **bad}
        with pytest.raises(jsonschema.ValidationError):
            schema.validate(cfg)
    # the tables name it and give it a colour of its own
    assert tables.method_name("toy") == "+Toy" and tables.method_name("toy-strong") == "toy-strong"
    names = tables.method_names()
    assert list(names)[-3:] == ["dllm2rec", "toy", "dllm2rec-official"]
    assert tables.method_colour("toy") not in [tables.method_colour(m) for m in names if m != "toy"]
    assert spec.parse_options({"type": "toy", "weight": 1}) == toy_method(weight=1.0)
    assert spec.teacher_needs({"type": "toy"}) == {"ranks": ["train"]}


def test_docs_students_lists_the_declared_defaults():
    """docs/students.md's table of defaults and their sources repeats the declarations."""
    import re

    text = (ROOT / "docs/students.md").read_text()
    table = text[text.index("Backbone defaults"):].split("\n\n")[1]
    checked = 0
    for line in table.splitlines()[2:]:
        key_cell, default_cell = [c.strip() for c in line.strip("|").split("|")[:2]]
        keys = re.findall(r"`(\w+)`", key_cell)
        owners = key_cell.split("`")[0].strip().split("/") if not key_cell.startswith("`") else []
        values = [float(v) for v in default_cell.split(", ")]
        assert len(values) == len(keys), line
        for key, value in zip(keys, values):
            for cls in [BACKBONES[o] for o in owners] or [StudentSettings]:
                assert getattr(cls, key) == value, (line, cls.__name__, key)
                checked += 1
    assert checked >= 9
