"""The config schema: ``workflow/schemas/config.schema.yaml`` completed from the declarations.

The YAML file holds the config's structure and every key's description. What the code declares
is filled in here, so that it has one home:

- the keys, types, bounds, enums and defaults of the sections of :mod:`dllm2rec.settings`
  (a dataset's scalar settings, ``student``, its ``backbones``, a teacher's settings and a
  recommender teacher's), merged
  into the YAML's properties of those sections (which may carry only a ``description``);
- ``$defs/backbone`` (the registered backbones) and ``$defs/method_type`` (the registered
  methods), which the YAML refers to wherever a backbone or a method type is named, and the
  default backbones (all of them for the tables, the reference one for Figure 2 and Tables 7-8);
- each method type's keys (``methods.<name>`` with ``type: <t>``), from its options dataclass in
  :mod:`dllm2rec.distill.spec`.

:func:`validate` checks a config against it and writes the defaults into it, as Snakemake's
``validate`` does. Without torch (``workflow/rules/config.smk`` runs it before the DAG is built).
"""
from __future__ import annotations

import copy
import dataclasses
import typing
from pathlib import Path
from typing import Annotated, Literal

from dllm2rec import settings as S
from dllm2rec.distill import spec

SCHEMA_FILE = Path(__file__).resolve().parents[1] / "workflow" / "schemas" / "config.schema.yaml"

# where each section's properties go: (path in the YAML schema, its dataclass)
SECTIONS = (
    (("$defs", "dataset"), S.DatasetSettings),
    (("properties", "student"), S.StudentSettings),
    (("$defs", "teacher"), S.TeacherSettings),
    (("$defs", "teacher", "properties", "recommender"), S.RecommenderSettings),
)
_TYPES = {bool: "boolean", int: "integer", float: "number", str: "string", dict: "object"}


def type_schema(tp) -> dict:
    """The JSON Schema of a setting's type (its bounds included, no default)."""
    if typing.get_origin(tp) is Annotated:
        base, *keywords = typing.get_args(tp)
        out = type_schema(base)
        for k in keywords:
            out.update(copy.deepcopy(k))
        return out
    inner = S._optional(tp)
    if inner is not None:  # a key left unset when absent (null is not written)
        return type_schema(inner)
    if typing.get_origin(tp) is Literal:
        return {"enum": list(typing.get_args(tp))}
    if typing.get_origin(tp) is tuple:
        return {"type": "array", "items": type_schema(typing.get_args(tp)[0])}
    if S.is_section(tp):
        return section_schema(tp)
    if tp is object:
        return {}
    return {"type": _TYPES[tp]}


def _default(value):
    if dataclasses.is_dataclass(value):
        return {}  # a nested section: its own defaults are filled in below it
    return list(value) if isinstance(value, tuple) else value


def section_schema(cls, written: dict | None = None, where: str = "") -> dict:
    """The object schema of a settings dataclass, merged into ``written`` (the YAML's part: its
    description, structure and the properties in ``cls.other_keys``). A field's YAML property may
    carry only its description (and, for a nested section, its own properties)."""
    out = dict(written or {})
    out.update(type="object", additionalProperties=False)
    props = dict(out.get("properties") or {})
    hints = S.field_types(cls, extras=True)
    stale = set(props) - set(hints) - set(cls.other_keys)
    if stale:
        raise ValueError(f"config schema {where}: {sorted(stale)} are not settings of {cls.__name__} "
                         "(dllm2rec/settings.py): declare them there, or drop them here")
    for f in dataclasses.fields(cls):
        yaml_prop = dict(props.get(f.name) or {})
        tp = hints[f.name]
        if S.is_section(tp):
            prop = section_schema(tp, yaml_prop, f"{where}.{f.name}")
        else:
            extra = set(yaml_prop) - {"description"}
            if extra:
                raise ValueError(f"config schema {where}.{f.name}: {sorted(extra)} are declared in "
                                 f"dllm2rec/settings.py ({cls.__name__}); keep only its description here")
            prop = {**yaml_prop, **type_schema(tp)}
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        if cls.fills_defaults and default is not None and f.metadata.get("schema_default", True):
            prop["default"] = _default(default)
        props[f.name] = prop
    out["properties"] = props
    return out


def method_branch(cls) -> dict:
    """The keys of ``methods.<name>`` for a method type (its options dataclass; no defaults:
    a method's options are applied by the method)."""
    hints = S.field_types(cls, extras=True)
    return {"if": {"properties": {"type": {"const": cls.method}}},
            "then": {"properties": {k: type_schema(tp) for k, tp in hints.items()},
                     "propertyNames": {"enum": [*spec.RESERVED_KEYS, *hints]}}}


def _at(schema: dict, path: tuple[str, ...]) -> dict:
    for key in path:
        schema = schema[key]
    return schema


def config_schema(path: str | Path = SCHEMA_FILE) -> dict:
    """The whole schema: the YAML file completed from the declarations (see the module docstring)."""
    import yaml

    schema = yaml.safe_load(Path(path).read_text())
    for where, cls in SECTIONS:
        parent, key = _at(schema, where[:-1]), where[-1]
        parent[key] = section_schema(cls, parent[key], ".".join(where))
    rec = _at(schema, ("$defs", "teacher", "properties", "recommender", "properties", "student"))
    student = S.field_types(S.StudentSettings, extras=True)
    rec.update(type="object", additionalProperties=False,
               properties={k: type_schema(student[k]) for k in S.RECOMMENDER_STUDENT_KEYS})
    backbones = _at(schema, ("properties", "student", "properties", "backbones"))
    backbones.update(type="object", additionalProperties=False, default={name: {} for name in S.BACKBONES})
    written = backbones.get("properties") or {}
    if set(written) - set(S.BACKBONES):
        raise ValueError(f"config schema student.backbones: {sorted(set(written) - set(S.BACKBONES))} are not "
                         "registered backbones (dllm2rec/settings.py BACKBONES)")
    backbones["properties"] = {name: section_schema(cls, written.get(name), f"student.backbones.{name}")
                               for name, cls in S.BACKBONES.items()}
    schema["$defs"]["backbone"] = {"enum": list(S.BACKBONES)}
    tables = _at(schema, ("properties", "tables", "properties"))
    tables["backbones"]["default"] = list(S.BACKBONES)
    for part in ("figure2", "ablation"):
        tables[part]["properties"]["backbone"]["default"] = S.REFERENCE_BACKBONE
    schema["$defs"]["method_type"] = {"enum": list(spec.OPTIONS)}
    entry = _at(schema, ("properties", "methods", "additionalProperties"))
    entry["allOf"] = [method_branch(cls) for cls in spec.OPTIONS.values()]
    return schema


def validate(config: dict, path: str | Path = SCHEMA_FILE) -> dict:
    """Check ``config`` against :func:`config_schema` and write the schema's defaults into it
    (jsonschema's ``ValidationError`` on the first problem). Returns ``config``."""
    from jsonschema import Draft202012Validator, validators

    schema = config_schema(path)
    check_properties = Draft202012Validator.VALIDATORS["properties"]

    def set_defaults(validator, properties, instance, sub):
        if isinstance(instance, dict):
            for name, prop in properties.items():
                if "default" in prop:
                    instance.setdefault(name, copy.deepcopy(prop["default"]))
        yield from check_properties(validator, properties, instance, sub)

    Validator = validators.extend(Draft202012Validator, {"properties": set_defaults})
    Validator(schema).validate(config)
    return config
