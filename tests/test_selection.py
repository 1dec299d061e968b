"""Search grids and the choice on validation (dllm2rec/selection.py)."""
import csv
import json

import pytest

from dllm2rec import tables
from dllm2rec.distill.spec import KAROptions, DLLM2RecOptions, option_types
from dllm2rec.io import UserError
from dllm2rec.selection import SearchError, grid_points, read_choice, select, table_method

DLLM2REC = option_types(DLLM2RecOptions)


def test_grid_points_cover_every_combination_with_stable_readable_names():
    points = grid_points("dllm2rec", {"lambda_d": [0.1, 0.5], "weight_decay": [0, 1.0e-6, 1.0e-4]}, DLLM2REC)
    assert [p.name for p in points] == [
        "dllm2rec@lambda_d=0.1,weight_decay=0", "dllm2rec@lambda_d=0.1,weight_decay=1e-06",
        "dllm2rec@lambda_d=0.1,weight_decay=0.0001", "dllm2rec@lambda_d=0.5,weight_decay=0",
        "dllm2rec@lambda_d=0.5,weight_decay=1e-06", "dllm2rec@lambda_d=0.5,weight_decay=0.0001"]
    p = points[4]
    assert p.method == "dllm2rec" and p.method_options == {"lambda_d": 0.5} and p.student == {"weight_decay": 1.0e-6}
    assert p.values == {"lambda_d": 0.5, "weight_decay": 1.0e-6}


def test_a_key_both_option_and_student_key_is_the_option_unless_prefixed():
    kar = option_types(KAROptions)
    (p,) = grid_points("kar", {"dropout": [0.2]}, kar)
    assert p.method_options == {"dropout": 0.2} and p.student == {}
    (p,) = grid_points("kar", {"student.dropout": [0.2]}, kar)
    assert p.method_options == {} and p.student == {"dropout": 0.2} and p.name == "kar@student.dropout=0.2"


@pytest.mark.parametrize("search, message", [
    ({"lamda_d": [0.1]}, "methods.dllm2rec.search.lamda_d: not an option of this method"),
    ({"student.epochs": [3]}, "nor a student key that a search may vary (lr, weight_decay"),
    ({"lambda_d": []}, "methods.dllm2rec.search.lambda_d must be a non-empty list"),
    ({"lambda_d": 0.3}, "must be a non-empty list"),
    ({"weight_decay": ["1e-4"]}, "write 1.0e-4, not 1e-4"),
    ({"lambda_d": [0.3, 0.30]}, "lists a value twice"),
    ({}, "methods.dllm2rec.search must map"),
])
def test_bad_grids_name_the_key_and_the_fix(search, message):
    with pytest.raises(SearchError, match=None) as err:
        grid_points("dllm2rec", search, DLLM2REC)
    assert message in str(err.value)


def write_run(folder, point, values, seed, valid_ndcg, test_ndcg, dataset="d", backbone="dros"):
    folder.mkdir(parents=True, exist_ok=True)
    metrics = {
        "dataset": dataset, "teacher": "t", "backbone": backbone, "method": point, "seed": seed,
        "params": {"student": {}, "method": {"type": "dllm2rec"}, "search": {"method": "dllm2rec", "values": values}},
        "valid": {"HR@20": 0.5, "NDCG@20": valid_ndcg}, "test": {"HR@20": 0.5, "NDCG@20": test_ndcg},
    }
    path = folder / "metrics.json"
    path.write_text(json.dumps(metrics))
    return str(path)


def fixture_runs(tmp_path):
    """Point a wins on validation (mean 0.30 vs 0.25) while b wins on test by far."""
    runs = []
    for point, values, valid, test in (("dllm2rec@lambda_d=0.1", {"lambda_d": 0.1}, (0.32, 0.28), (0.10, 0.12)),
                                       ("dllm2rec@lambda_d=0.5", {"lambda_d": 0.5}, (0.20, 0.30), (0.40, 0.44))):
        for seed in (0, 1):
            runs.append(write_run(tmp_path / point / f"seed{seed}", point, values, seed, valid[seed], test[seed]))
    return runs


def test_selection_uses_validation_only(tmp_path):
    out = tmp_path / "selection.csv"
    select(fixture_runs(tmp_path), str(out))
    rows = list(csv.DictReader(out.open()))
    assert [(r["point"], r["chosen"]) for r in rows] == [("dllm2rec@lambda_d=0.1", "1"), ("dllm2rec@lambda_d=0.5", "0")]
    assert float(rows[0]["valid_NDCG@20"]) == pytest.approx(0.30) and float(rows[1]["valid_NDCG@20"]) == pytest.approx(0.25)
    assert float(rows[1]["test_NDCG@20"]) == pytest.approx(0.42)  # better on test, not chosen
    assert rows[0]["values"] == "lambda_d=0.1" and rows[0]["seeds"] == "0 1"
    assert read_choice(out) == {("d", "dros", "dllm2rec"): "dllm2rec@lambda_d=0.1"}


def test_selection_ties_keep_the_first_point_and_groups_are_separate(tmp_path):
    runs = [write_run(tmp_path / f"{b}{p}", f"dllm2rec@lambda_d={p}", {"lambda_d": p}, 0, v, 0.0, backbone=b)
            for b, p, v in (("dros", 0.1, 0.2), ("dros", 0.5, 0.2), ("sasrec", 0.1, 0.1), ("sasrec", 0.5, 0.3))]
    out = tmp_path / "selection.csv"
    select(runs, str(out))
    assert read_choice(out) == {("d", "dros", "dllm2rec"): "dllm2rec@lambda_d=0.1",
                                ("d", "sasrec", "dllm2rec"): "dllm2rec@lambda_d=0.5"}


def test_selection_refuses_points_run_with_different_seeds_and_plain_runs(tmp_path):
    runs = fixture_runs(tmp_path)[:3]  # the second point lacks seed 1
    with pytest.raises(UserError, match="different seeds"):
        select(runs, str(tmp_path / "s.csv"))
    plain = tmp_path / "plain" / "metrics.json"
    plain.parent.mkdir()
    metrics = json.loads(open(runs[0]).read())
    del metrics["params"]["search"]
    plain.write_text(json.dumps(metrics))
    with pytest.raises(UserError, match="not a grid point"):
        select([str(plain)], str(tmp_path / "s.csv"))


def test_tables_read_a_chosen_point_as_its_method(tmp_path):
    runs = fixture_runs(tmp_path)
    assert table_method(json.loads(open(runs[0]).read())) == "dllm2rec"
    assert table_method({"method": "none", "params": {"student": {}, "method": {"type": "none"}}}) == "none"
    loaded = tables.load_runs(runs[:2])
    assert list(loaded) == [("d", "dros", "dllm2rec")] and len(loaded["d", "dros", "dllm2rec"]) == 2
