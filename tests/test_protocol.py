"""The tuning protocol of the configs (docs/protocol.md): every Table 5 row tuned alike."""
import math

import pytest

from workflow_utils import ROOT, load_yaml, merged

PAPER_WEIGHT_DECAY = [1.0e-4, 1.0e-5, 1.0e-6, 1.0e-7, 0]  # §4.1.4



def config(name):
    base = load_yaml(ROOT / "config.yaml")
    return base if name == "config.yaml" else merged(base, load_yaml(ROOT / "configs" / name))


def n_points(entry):
    return math.prod(len(v) for v in entry.get("search", {}).values())


def test_every_paper_table5_row_has_the_papers_weight_decay_grid():
    methods = load_yaml(ROOT / "configs" / "paper.yaml")["methods"]  # the file itself, not the merge
    for name in load_yaml(ROOT / "configs" / "paper.yaml")["tables"]["methods"]:
        grid = methods[name].get("search", {})
        assert grid.get("weight_decay") == PAPER_WEIGHT_DECAY, f"methods.{name}.search lacks the paper's weight-decay grid"
        assert name == "none" or len(grid) > 1, f"methods.{name}.search: the weight decay alone, not its own keys"


def test_paper_table5_has_both_dllm2rec_variants_on_one_grid():
    cfg = config("paper.yaml")
    rows = [m for m in cfg["tables"]["methods"] if cfg["methods"][m]["type"] == "dllm2rec"]
    variants = {}
    for m in rows:
        entry = dict(cfg["methods"][m])
        while "variant" not in entry and "extends" in entry:
            entry = {**cfg["methods"][entry.pop("extends")], **entry}
        variants[entry.get("variant", "paper")] = m
    assert set(variants) == {"paper", "official"}
    assert cfg["methods"][variants["paper"]]["search"] == cfg["methods"][variants["official"]]["search"]
    assert n_points(cfg["methods"][variants["paper"]]) == 50  # lambda_d {0.1, ..., 1.0} x weight decay


@pytest.mark.parametrize("name", ["config.yaml", "evidence.yaml", "paper.yaml"])
def test_no_table5_row_is_left_untuned(name):
    cfg = config(name)
    points = {m: n_points(cfg["methods"][m]) for m in cfg["tables"]["methods"]}
    assert min(points.values()) > 1, f"{name}: untuned rows {[m for m, n in points.items() if n == 1]}"
    if name != "paper.yaml":  # the small configs: the same budget for every row
        assert len(set(points.values())) == 1, f"{name}: rows with different budgets {points}"
