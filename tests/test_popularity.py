"""Table 5's reference rows: the most popular training items and chance, on a hand-made dataset
whose answer is worked out by hand."""
import csv
import json
import math

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from dllm2rec import tables
from dllm2rec.cli import main as cli_main
from dllm2rec.dataset import read_popularity
from dllm2rec.evaluate import chance_metrics
from dllm2rec.io import UserError

N_ITEMS = 25
# train targets: item 3 five times, item 7 four times, item 1 three times, item 0 twice; every
# history is the one item 20, so counted over the training sequences (histories and targets)
# item 20 leads (14 times): popularity ranks 20, 3, 7, 1, 0, then 20 items tied at zero;
# counted over the targets alone: 3, 7, 1, 0, then 21 items tied at zero
TRAIN = [3] * 5 + [7] * 4 + [1] * 3 + [0] * 2
HISTORY_ITEM = 20
VALID = [0]  # rank 4 (targets alone: 3)
TEST = [3, 7, 1, 24]  # ranks 1, 2, 3 and 24 (item 24 tied with 19 others, ties pessimistic); targets alone: 0, 1, 2, 24


def write_handmade(folder):
    folder.mkdir(parents=True)
    pq.write_table(pa.table({
        "item_id": pa.array(range(N_ITEMS), pa.int32()),
        "raw_id": pa.array([f"i{i}" for i in range(N_ITEMS)]),
        "title": pa.array([f"Item {i}" for i in range(N_ITEMS)]),
    }), folder / "items.parquet")
    targets = TRAIN + VALID + TEST
    split = ["train"] * len(TRAIN) + ["valid"] * len(VALID) + ["test"] * len(TEST)
    pq.write_table(pa.table({
        "seq_id": pa.array(range(len(targets)), pa.int64()),
        "user": pa.array([f"u{i}" for i in range(len(targets))]),
        "history": pa.array([[HISTORY_ITEM] for _ in targets], pa.list_(pa.int32())),
        "target": pa.array(targets, pa.int32()),
        "timestamp": pa.array(range(len(targets)), pa.int64()),
        "split": pa.array(split),
    }), folder / "sequences.parquet")
    return folder


def test_popularity_reference_of_a_handmade_dataset(tmp_path):
    data = write_handmade(tmp_path / "hand")
    out = tmp_path / "popularity.json"
    assert cli_main(["popularity", "--data", str(data), "--out", str(out)]) == 0
    ref = read_popularity(out)
    assert ref["n_items"] == N_ITEMS and ref["n_train"] == len(TRAIN)
    test = ref["popularity"]["test"]
    assert test["HR@1"] == 0.0 and test["HR@5"] == test["HR@20"] == pytest.approx(3 / 4)  # item 24: a miss at 20
    assert test["NDCG@20"] == pytest.approx((1 / math.log2(3) + 1 / math.log2(4) + 1 / math.log2(5)) / 4)
    valid = ref["popularity"]["valid"]
    assert valid["HR@1"] == 0.0 and valid["HR@5"] == 1.0 and valid["NDCG@5"] == pytest.approx(1 / math.log2(6))
    targets = ref["popularity_targets"]["test"]
    assert targets["HR@1"] == pytest.approx(1 / 4) and targets["HR@20"] == pytest.approx(3 / 4)
    assert targets["NDCG@20"] == pytest.approx((1 + 1 / math.log2(3) + 1 / math.log2(4)) / 4)
    assert ref["popularity_targets"]["valid"]["NDCG@5"] == pytest.approx(1 / math.log2(5))
    # chance: the target's rank is uniform on 0..n-1
    assert ref["chance"]["HR@20"] == pytest.approx(20 / N_ITEMS)
    assert ref["chance"]["NDCG@1"] == pytest.approx(1 / N_ITEMS)
    assert ref["chance"]["NDCG@5"] == pytest.approx(sum(1 / math.log2(r + 2) for r in range(5)) / N_ITEMS)


def test_chance_is_the_mean_over_every_rank():
    from dllm2rec.evaluate import metrics_from_ranks

    assert chance_metrics(30) == pytest.approx(metrics_from_ranks(list(range(30))))
    assert chance_metrics(3)["HR@20"] == 1.0


def test_table5_has_the_popularity_and_chance_rows_after_the_teacher(tmp_path):
    data = write_handmade(tmp_path / "hand")
    pop = tmp_path / "popularity.json"
    assert cli_main(["popularity", "--data", str(data), "--out", str(pop)]) == 0
    ref = json.loads(pop.read_text())
    name = ref["dataset"]
    metrics = tmp_path / "m" / "metrics.json"
    metrics.parent.mkdir()
    test = {f"{m}@{k}": 0.5 for m in ("HR", "NDCG") for k in (1, 5, 10, 20)}
    metrics.write_text(json.dumps({"dataset": name, "teacher": "tch", "backbone": "sasrec", "method": "none",
                                   "params": {}, "seed": 0, "valid": test, "test": test, "best_epoch": 1,
                                   "train_seconds": 1.0, "inference_seconds": 0.1}))
    teacher = tmp_path / "t" / "metrics.json"
    teacher.parent.mkdir()
    teacher.write_text(json.dumps({"dataset": name, "teacher": "tch", "test": {"HR@20": 0.1, "NDCG@20": 0.05},
                                   "inference_seconds": 1.0, "n_test": 4}))
    out = tmp_path / "t5.csv"
    tables.table5(teacher=[str(teacher)], students=[str(metrics)], out=str(out), out_seeds=str(tmp_path / "s.csv"),
                  popularity=[str(pop)])
    rows = {(r["method"], r["metric"]): r for r in tables.read_records(str(out))}
    assert list(dict.fromkeys(k[0] for k in rows)) == ["teacher", "popularity", "chance", "none"]
    assert rows["teacher", "HR@20"]["mean"] == 0.1 and rows["teacher", "NDCG@20"]["mean"] == 0.05
    assert rows["popularity", "HR@20"]["mean"] == 0.75 and rows["popularity", "HR@20"]["model"] == "Popularity"
    assert rows["popularity", "NDCG@20"]["mean"] == pytest.approx(
        (1 / math.log2(3) + 1 / math.log2(4) + 1 / math.log2(5)) / 4, rel=1e-7)
    assert rows["chance", "HR@20"]["mean"] == pytest.approx(20 / N_ITEMS)
    assert rows["chance", "HR@20"]["ci_low"] != rows["chance", "HR@20"]["ci_low"]  # an expectation: no interval
    assert rows["none", "HR@20"]["backbone"] == "sasrec"


def test_an_incomplete_reference_names_the_rule(tmp_path):
    bad = tmp_path / "popularity.json"
    bad.write_text(json.dumps({"dataset": "x"}))
    with pytest.raises(UserError, match="rerun the popularity rule"):
        read_popularity(bad)
