"""Each distillation method declares its options once (a dataclass in dllm2rec/distill/spec.py):
the schema's keys of its type are made from it, config.yaml and docs/methods.md must agree with
it, config entries are parsed into it strictly, and the workflow can ask which teacher artifacts
a method reads without torch."""
from __future__ import annotations

import os
import re
import subprocess
import sys
import typing
from pathlib import Path

import pytest
import torch
import yaml

from dllm2rec.distill import METHODS, get_method
from dllm2rec.distill.common import sample_negatives, seen_mask
from dllm2rec.distill.spec import OPTIONS, SPLITS, option_defaults, option_types, parse_options, teacher_needs
from dllm2rec.io import UserError

ROOT = Path(__file__).resolve().parents[1]
get_method("none")  # registers every method
NAMES = sorted(METHODS)


def _schema_blocks() -> dict[str, dict]:
    from dllm2rec.schema import config_schema

    schema = config_schema()
    entry = schema["properties"]["methods"]["additionalProperties"]
    assert entry["properties"]["type"] == {"$ref": "#/$defs/method_type"}
    blocks = {b["if"]["properties"]["type"]["const"]: b["then"] for b in entry["allOf"]}
    return {"types": schema["$defs"]["method_type"]["enum"], **blocks}


def _docs_tables() -> dict[str, dict[str, object]]:
    """{method type: {key: default}} from the `| key | default | meaning |` table of each
    `## Title (`type`...)` section of docs/methods.md."""
    tables, current = {}, None
    for line in (ROOT / "docs/methods.md").read_text().splitlines():
        head = re.match(r"^## .*?\(`([a-z0-9_]+)`", line)
        if head:
            current = head.group(1)
            continue
        if line.startswith("## "):
            current = None
        row = re.match(r"^\| *([a-z_0-9]+) *\| *([^|]+?) *\|", line)
        if current and row and row.group(1) != "key":
            tables.setdefault(current, {})[row.group(1)] = yaml.safe_load(row.group(2))
    return tables


def test_every_method_has_its_options_dataclass():
    assert sorted(OPTIONS) == NAMES
    for name in NAMES:
        assert METHODS[name].Options is OPTIONS[name]
        assert METHODS[name].needs == OPTIONS[name].needs


@pytest.mark.parametrize("name", NAMES)
def test_schema_agrees_with_dataclass(name):
    blocks = _schema_blocks()
    assert name in blocks["types"]
    then = blocks[name]
    types = option_types(OPTIONS[name])
    assert then["propertyNames"]["enum"] == ["type", "extends", "search", *types], "schema keys differ from the dataclass"
    for key, tp in types.items():
        prop = then["properties"][key]
        if typing.get_origin(tp) is typing.Literal:
            assert prop["enum"] == list(typing.get_args(tp)), key
        elif tp is bool:
            assert prop["type"] == "boolean", key
        elif tp is int:
            assert prop["type"] == "integer", key
        else:
            assert tp is float and prop["type"] == "number", key
        assert "default" not in prop, key  # a method applies its own defaults (the run's params stay as written)
    # bounds ride on the types: lambda weights are >= 0, list lengths >= 1
    if name == "dllm2rec":
        assert then["properties"]["lambda_d"] == {"type": "number", "minimum": 0}
        assert then["properties"]["k"] == {"type": "integer", "minimum": 1}
        assert then["properties"]["beta"] == {"type": "number", "exclusiveMinimum": 0}


CONFIG_METHODS = yaml.safe_load((ROOT / "config.yaml").read_text())["methods"]


@pytest.mark.parametrize("name", [n for n in CONFIG_METHODS if n in NAMES])
def test_config_entry_lists_the_defaults(name):
    """config.yaml's entry of a method type (the workflow gives a type without one its defaults)."""
    entry = CONFIG_METHODS[name]
    assert entry["type"] == name
    defaults = option_defaults(OPTIONS[name])
    assert list(k for k in entry if k not in ("type", "search")) == list(defaults), "config.yaml keys (and order) differ"
    assert parse_options(entry) == OPTIONS[name](), "config.yaml values differ from the dataclass defaults"
    for key, value in defaults.items():
        assert type(entry[key]) is type(value), f"methods.{name}.{key}: write {value!r}"


@pytest.mark.parametrize("name", NAMES)
def test_docs_table_lists_the_defaults(name):
    defaults = option_defaults(OPTIONS[name])
    table = _docs_tables().get(name, {})
    assert list(table) == list(defaults), f"docs/methods.md table of {name} differs from the dataclass"
    for key, value in defaults.items():
        assert table[key] == value and type(table[key]) is type(value), f"{name}.{key}: docs say {table[key]!r}"


def test_options_are_parsed_strictly():
    opt = parse_options({"type": "dllm2rec", "extends": "x", "lambda_d": 1, "variant": "official"})
    assert opt.lambda_d == 1.0 and isinstance(opt.lambda_d, float) and opt.variant == "official" and opt.k == 10
    with pytest.raises(UserError, match=r"methods\.abl\.lamda_d: unknown option"):
        parse_options({"type": "dllm2rec", "lamda_d": 1}, name="abl")
    with pytest.raises(UserError, match=r"methods\.rd\.k must be an integer"):
        parse_options({"type": "rd", "k": 2.5})
    with pytest.raises(UserError, match=r"methods\.rd\.k must be an integer"):
        parse_options({"type": "rd", "k": True})
    with pytest.raises(UserError, match=r"methods\.cd\.t1 must be a number; got '1e-3'"):
        parse_options({"type": "cd", "t1": "1e-3"})
    with pytest.raises(UserError, match=r"methods\.hint\.normalize must be true or false"):
        parse_options({"type": "hint", "normalize": "yes"})
    with pytest.raises(UserError, match=r"methods\.hint\.projector must be one of linear, mlp"):
        parse_options({"type": "hint", "projector": "conv"})
    with pytest.raises(UserError, match="unknown distillation method type 'bogus'"):
        parse_options({"type": "bogus"})
    # the method class parses its cfg the same way
    with pytest.raises(UserError, match=r"methods\.none\.k: unknown option"):
        get_method("none")({"type": "none", "k": 3}, None, None)


def _old_teacher_needs(cfg):
    """What workflow/rules/config.smk computes today, from the method classes."""
    cls = get_method(cfg["type"])
    splits = list(SPLITS) if cls.uses_teacher_at_inference else ["train"]
    return {part: splits for part in sorted(cls.required_parts(cfg))}


@pytest.mark.parametrize("cfg", [{"type": n} for n in NAMES] + [
    {"type": "dllm2rec", "embedding": False}, {"type": "dllm2rec", "ranking": False},
    {"type": "dllm2rec", "ranking": False, "embedding": False}, {"type": "dllm2rec", "embedding_method": "hint"},
])
def test_teacher_needs_matches_the_method_classes(cfg):
    assert teacher_needs(cfg) == _old_teacher_needs(cfg)


def test_teacher_needs_values():
    assert teacher_needs({"type": "none"}) == {}
    # KAR: per item and per sequence's user knowledge, never the teacher's ranks or generations
    assert teacher_needs({"type": "kar"}) == {p: ["train", "valid", "test"]
                                              for p in ("knowledge_item_embeddings", "knowledge_user_embeddings")}
    assert teacher_needs({"type": "dllm2rec", "embedding": False}) == {"ranks": ["train"]}


def test_spec_does_not_import_torch():
    code = ("import sys, dllm2rec.distill.spec as s; "
            "print(s.teacher_needs({'type': 'dllm2rec', 'extends': 'dllm2rec', 'ranking': False})); "
            "assert 'torch' not in sys.modules, 'torch was imported'")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "{'item_embeddings': ['train']}"


def test_sample_negatives_exclude_history_target_and_list():
    n = 7
    history = torch.tensor([[0, 1, 7], [2, 7, 7], [0, 1, 2]])  # 7 = padding
    target = torch.tensor([2, 3, 3])
    exclude = torch.tensor([[4, 7], [0, 5], [4, 5]])
    expect_allowed = [{3, 5, 6}, {1, 4, 6}, {6}]
    mask = seen_mask(history, target, n)
    assert [set(torch.nonzero(~m).flatten().tolist()) for m in mask] == [{3, 4, 5, 6}, {0, 1, 4, 5, 6}, {4, 5, 6}]
    gen = torch.Generator().manual_seed(0)
    for replacement in (False, True):
        items, valid = sample_negatives(history, target, n, 3, gen, exclude=exclude, replacement=replacement)
        assert items.shape == (3, 3)
        for row, (its, ok) in enumerate(zip(items.tolist(), valid.tolist())):
            assert all(i in expect_allowed[row] for i, v in zip(its, ok) if v)
            assert all(i not in expect_allowed[row] for i, v in zip(its, ok) if not v) or replacement
        if not replacement:  # rows 0 and 1 have 3 allowed items: all drawn once; row 2 has one
            assert [sorted(i for i, v in zip(its, ok) if v) for its, ok in zip(items.tolist(), valid.tolist())] == \
                [[3, 5, 6], [1, 4, 6], [6]]
        else:
            assert valid.all() and (items[2] == 6).all()
    # uniform over the allowed items
    big = sample_negatives(history[:1].expand(6000, -1), target[:1].expand(6000), n, 1, gen)[0].flatten()
    freq = torch.bincount(big, minlength=n).float() / big.numel()
    assert torch.allclose(freq[[3, 4, 5, 6]], torch.full((4,), 0.25), atol=0.03) and freq[[0, 1, 2]].sum() == 0
