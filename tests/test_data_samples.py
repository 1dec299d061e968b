"""docs/method.md §1 on the worked example of tests/fixtures_data.py: ids, sample rules, split, sampling."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from fixtures_data import (
    AMAZON_EXPECTED,
    AMAZON_SPLITS,
    ID,
    MOVIELENS_EXPECTED,
    MOVIELENS_SPLITS,
    params,
    title,
    write_games,
)

from dllm2rec.data.build import build_dataset
from dllm2rec.io import parquet_metadata

ROOT = Path(__file__).resolve().parents[1]


def load(out: Path):
    items = pl.read_parquet(out / "items.parquet")
    seqs = pl.read_parquet(out / "sequences.parquet")
    stats = json.loads((out / "stats.json").read_text())
    return items, seqs, stats


def rows(seqs: pl.DataFrame):
    return [(r["user"], r["history"], r["target"], r["timestamp"]) for r in seqs.iter_rows(named=True)]


def test_items_sorted_by_raw_id_with_titles(tmp_path):
    build_dataset("g", params("games", write_games(tmp_path)), str(tmp_path / "out"))
    items, _, stats = load(tmp_path / "out")
    assert items.schema == {"item_id": pl.Int32, "raw_id": pl.String, "title": pl.String}
    assert items["raw_id"].to_list() == sorted(ID)
    assert items["item_id"].to_list() == list(range(len(ID)))
    assert items["title"].to_list() == [title(r) for r in sorted(ID)]
    assert stats["has_titles"] is True


def test_amazon_rule_worked_example(tmp_path):
    build_dataset("g", params("games", write_games(tmp_path), rule="amazon"), str(tmp_path / "out"))
    _, seqs, stats = load(tmp_path / "out")
    assert seqs.schema == {"seq_id": pl.Int64, "user": pl.String, "history": pl.List(pl.Int32),
                           "target": pl.Int32, "timestamp": pl.Int64, "split": pl.String}
    assert rows(seqs) == AMAZON_EXPECTED
    assert seqs["split"].to_list() == AMAZON_SPLITS
    assert seqs["seq_id"].to_list() == list(range(10))
    c = stats["counts"]
    assert c["empty_history_skipped"] == 1            # user C
    assert c["interactions_dropped_untitled_item"] == 2  # Z1 (no title), Z2 (" x ")
    assert c["duplicate_interactions_dropped"] == 1   # E4@45 twice
    assert c["items_without_title"] == 2
    assert (stats["users"], stats["items"], stats["interactions"]) == (5, 22, 22)
    assert stats["density"] == pytest.approx(22 / (5 * 22))
    assert stats["rows"] == {"train": 8, "valid": 1, "test": 1}
    assert stats["source"] == "games" and stats["timestamps"] == "file"


def test_movielens_rule_worked_example(tmp_path):
    build_dataset("g", params("games", write_games(tmp_path), rule="movielens"), str(tmp_path / "out"))
    _, seqs, stats = load(tmp_path / "out")
    assert rows(seqs) == MOVIELENS_EXPECTED
    assert seqs["split"].to_list() == MOVIELENS_SPLITS
    assert stats["counts"]["users_without_samples"] == 2  # B (3 = max_history) and C (1)
    assert stats["rows"] == {"train": 7, "valid": 1, "test": 1}


def test_amazon_rule_default_history_of_ten(tmp_path):
    """max_history 10: users with <= 10 interactions give one sample, longer ones one per item from the 11th."""
    from dllm2rec.data.lines import Report
    from dllm2rec.data.samples import make_samples
    users = ["u"] * 13 + ["v"] * 4
    df = pl.DataFrame({"user": users, "item": [f"{k:02d}" for k in range(13)] + ["00", "01", "02", "03"],
                       "timestamp": list(range(13)) + [100, 101, 102, 103]})
    s, _, _ = make_samples(df, "amazon", 10, Report())
    hist = [s.pool[a:b].tolist() for a, b in zip(s.lo, s.hi)]
    assert hist == [list(range(10)), list(range(1, 11)), list(range(2, 12)), [0, 1, 2]]
    assert s.target.tolist() == [10, 11, 12, 3]
    s, _, _ = make_samples(df, "movielens", 10, Report())
    assert s.target.tolist() == [10, 11, 12]


def test_numeric_ids_sort_as_numbers():
    from dllm2rec.data.lines import numeric_aware_order
    assert numeric_aware_order(["10", "2", "1", "02"]) == ["1", "02", "2", "10"]
    assert numeric_aware_order(["b", "10", "a"]) == ["10", "a", "b"]


def test_sampling_is_seeded_per_split_and_keeps_seq_ids(tmp_path):
    paths = write_games(tmp_path)
    build_dataset("g", params("games", paths), str(tmp_path / "full"))
    spec = {"train": 3, "valid": None, "test": 5, "seed": 7}
    build_dataset("g", params("games", paths, sample=spec), str(tmp_path / "a"))
    build_dataset("g", params("games", paths, sample=spec), str(tmp_path / "b"))
    _, full, _ = load(tmp_path / "full")
    _, a, stats = load(tmp_path / "a")
    _, b, _ = load(tmp_path / "b")
    assert a.equals(b)
    assert stats["rows"] == {"train": 3, "valid": 1, "test": 1}
    assert stats["rows_before_sampling"] == {"train": 8, "valid": 1, "test": 1}
    ids = a["seq_id"].to_list()
    assert ids == sorted(ids)
    assert a.drop("seq_id").equals(full.filter(pl.col("seq_id").is_in(ids)).drop("seq_id"))
    assert a.filter(pl.col("split") == "train")["seq_id"].max() < 8
    picks = {tuple(np.sort(np.random.default_rng([s, 0]).choice(8, 3, replace=False))) for s in range(20)}
    assert len(picks) > 1  # the seed matters


def test_params_in_metadata(tmp_path):
    p = params("games", write_games(tmp_path))
    build_dataset("g", p, str(tmp_path / "out"))
    for name in ("items.parquet", "sequences.parquet"):
        meta = parquet_metadata(tmp_path / "out" / name)
        assert meta["params"] == p and meta["dataset"] == "g" and meta["seq_size"] == 3


def test_ids_do_not_depend_on_hash_seed(tmp_path):
    paths = write_games(tmp_path)
    code = ("import sys, json; from dllm2rec.data.build import build_dataset; "
            "build_dataset('g', json.loads(sys.argv[1]), sys.argv[2])")
    outs = []
    for seed in ("1", "12345"):
        out = tmp_path / f"out{seed}"
        env = {**os.environ, "PYTHONHASHSEED": seed,
               "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
        subprocess.run([sys.executable, "-c", code, json.dumps(params("games", paths)), str(out)],
                       check=True, env=env, cwd=tmp_path, capture_output=True)
        outs.append(out)
    for name in ("items.parquet", "sequences.parquet", "stats.json"):
        assert (outs[0] / name).read_bytes() == (outs[1] / name).read_bytes(), name


def test_min_title_chars(tmp_path):
    paths = write_games(tmp_path)
    build_dataset("g", {**params("games", paths), "min_title_chars": 0}, str(tmp_path / "out"))
    items, _, stats = load(tmp_path / "out")
    assert "Z2" in items["raw_id"].to_list() and items.height == 23  # title "x" is long enough now
    assert stats["counts"]["items_without_title"] == 1               # Z1 still has none
    from dllm2rec.io import UserError
    with pytest.raises(UserError, match="no interaction left after dropping those on untitled items"):
        build_dataset("g", {**params("games", paths), "min_title_chars": 20}, str(tmp_path / "none"))
