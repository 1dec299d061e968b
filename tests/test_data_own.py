"""Your own data: releases as they come (issue 12), RecBole atomic files, duplicates, config checks."""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import polars as pl
import pytest
import yaml
from fixtures_data import INTERACTIONS, TITLED, params, title, write_games, write_llara_release, write_official
from workflow_utils import ROOT, copy_project, snakemake, write_config

from dllm2rec.data.build import build_dataset
from dllm2rec.data.check import dataset_problem
from dllm2rec.data.official import export_official
from dllm2rec.io import UserError


def load(out: Path):
    return (pl.read_parquet(out / "items.parquet"), pl.read_parquet(out / "sequences.parquet"),
            json.loads((out / "stats.json").read_text()))


def official(src: Path, **extra) -> dict:
    return {"source": "official", "max_history": 10, "paths": {"dir": str(src)}, **extra}


# ------------------------------------------------------------------------- official releases as found
def test_release_without_statis_with_pickled_splits_and_padding_only_histories(tmp_path):
    src = write_llara_release(tmp_path)
    build_dataset("r", official(src), str(tmp_path / "out"))
    items, seqs, stats = load(tmp_path / "out")
    c = stats["counts"]
    assert c["data_statis_derived"] == 1 and "derived" in stats["source_info"]["data_statis"]
    assert stats["seq_size"] == 4 and stats["items"] == 5             # padding id 5 = item_num, longest seq 4
    assert stats["source_info"]["files"] == {"train": "train_data.df", "valid": "Val_data.df", "test": "Test_data.df"}
    assert c["padding_only_histories"] == 2 and c["empty_history_skipped"] == 2
    assert stats["rows"] == {"train": 5, "valid": 1, "test": 2}
    assert seqs["history"].to_list() == [[2], [2, 1], [0, 1, 2], [3], [1, 4, 3, 2], [0, 1], [4, 0], [3, 2, 1]]
    assert seqs["target"].to_list() == [1, 0, 3, 4, 0, 2, 1, 4]
    # one-character titles are names: kept and counted, and the dataset stays titled
    assert items["title"].to_list() == ["M", "Up", "Heat", "X", "Alien"]
    assert c["short_titles_kept"] == 2 and stats["has_titles"] is True


def test_derived_statis_and_spellings_give_what_the_canonical_folder_gives(tmp_path):
    src = write_official(tmp_path)
    build_dataset("o", official(src), str(tmp_path / "canonical"))
    (src / "data_statis.df").unlink()
    for name, new in (("val_data.csv", "Val_data.df"), ("test_data.csv", "test_data.df")):
        df = pd.read_csv(src / name)
        df["seq"] = [json.loads(s) for s in df["seq"]]
        df.to_pickle(src / new)
        (src / name).unlink()
    build_dataset("o", official(src), str(tmp_path / "found"))
    a, b = load(tmp_path / "canonical"), load(tmp_path / "found")
    assert a[0].equals(b[0]) and a[1].equals(b[1])
    assert b[2]["counts"]["data_statis_derived"] == 1 and "data_statis_derived" not in a[2]["counts"]
    assert (b[2]["seq_size"], b[2]["items"]) == (a[2]["seq_size"], a[2]["items"]) == (4, 5)
    export_official(str(tmp_path / "found"), str(tmp_path / "exported"))  # written back canonically
    assert (tmp_path / "exported" / "val_data.csv").exists() and (tmp_path / "exported" / "data_statis.df").exists()


def test_train_csv_spelling_and_missing_split_file(tmp_path):
    src = write_official(tmp_path)
    df = pd.read_pickle(src / "train_data.df")
    df.to_csv(src / "Train_data.csv", index=False)
    (src / "train_data.df").unlink()
    build_dataset("o", official(src), str(tmp_path / "out"))
    assert load(tmp_path / "out")[2]["rows"]["train"] == 10
    (src / "test_data.csv").unlink()
    spellings = r"test_data.csv / Test_data.csv / test_data.df / Test_data.df"
    with pytest.raises(UserError, match=rf"no test file \({spellings}\)"):
        build_dataset("o", official(src), str(tmp_path / "out2"))


def test_statis_cannot_be_derived_from_mixed_padding(tmp_path):
    src = write_official(tmp_path)
    (src / "data_statis.df").unlink()
    df = pd.read_pickle(src / "train_data.df")
    df.at[0, "seq"] = [0, 1, 7, 7]
    df.to_pickle(src / "train_data.df")
    with pytest.raises(UserError, match=r"no data_statis.df, and the padding ids differ .*Add data_statis.df"):
        build_dataset("o", official(src), str(tmp_path / "out"))


def test_partly_titled_release_fails_with_the_fix(tmp_path):
    src = write_official(tmp_path)
    (src / "id2name.txt").write_text("0::Zero\n1::One\n2::Two\n")
    with pytest.raises(UserError, match=r"names 3 of the 5 items; no usable name for id\(s\) 3, 4.*add the missing"):
        build_dataset("o", official(src), str(tmp_path / "out"))


# ------------------------------------------------------------------------------------- raw sources
def test_short_title_drops_only_that_item(tmp_path):
    build_dataset("g", params("games", write_games(tmp_path)), str(tmp_path / "out"))
    items, _, stats = load(tmp_path / "out")
    assert stats["counts"]["items_with_short_title"] == 1          # Z2, title "x"
    assert "Z2" not in items["raw_id"].to_list() and stats["has_titles"] is True


def test_duplicates_kept_by_default_and_counted(tmp_path):
    p = params("games", write_games(tmp_path))
    del p["drop_duplicates"]
    build_dataset("g", p, str(tmp_path / "out"))
    _, seqs, stats = load(tmp_path / "out")
    assert stats["counts"]["duplicate_interactions"] == 1 and "duplicate_interactions_dropped" not in stats["counts"]
    assert stats["interactions"] == 23
    e = seqs.filter(pl.col("user") == "E")
    assert e["target"].to_list() == [4, 4] and e["history"].to_list() == [[1, 2, 3], [2, 3, 4]]
    build_dataset("g", {**p, "drop_duplicates": True}, str(tmp_path / "dropped"))
    assert load(tmp_path / "dropped")[2]["counts"]["duplicate_interactions_dropped"] == 1


def test_negative_timestamps_are_counted_and_kept(tmp_path):
    extra = [json.dumps({"reviewerID": "A", "asin": "I1", "unixReviewTime": -5}).encode(),
             json.dumps({"reviewerID": "B", "asin": "J2", "unixReviewTime": -1}).encode()]
    build_dataset("g", params("games", write_games(tmp_path, extra_reviews=extra)), str(tmp_path / "out"))
    _, seqs, stats = load(tmp_path / "out")
    assert stats["counts"]["negative_timestamps"] == 2
    assert stats["interactions"] == 24  # kept: they come first in their users' histories


# ---------------------------------------------------------------------------------- RecBole atomic files
def write_atomic(tmp: Path, timed: bool = True, title_field: str = "title") -> dict:
    """The worked example of fixtures_data as RecBole atomic files."""
    head = "user_id:token\titem_id:token\trating:float" + ("\ttimestamp:float" if timed else "")
    lines = [f"{u}\t{i}\t5.0" + (f"\t{t}" if timed else "") for u, i, t in INTERACTIONS]
    (tmp / "ex.inter").write_text("\n".join([head, *lines]) + "\n")
    items = [f"{raw}\t{title(raw)}\t1999" for raw in TITLED] + ["Z1\t\t1999", "Z2\t x \t1999"]
    (tmp / "ex.item").write_text("\n".join([f"item_id:token\t{title_field}:token_seq\tyear:token", *items]) + "\n")
    return {"inter": str(tmp / "ex.inter"), "item": str(tmp / "ex.item")}


def test_recbole_atomic_files_equal_the_same_data_as_amazon_files(tmp_path):
    build_dataset("g", params("games", write_games(tmp_path)), str(tmp_path / "games"))
    build_dataset("r", params("recbole", write_atomic(tmp_path)), str(tmp_path / "recbole"))
    (gi, gs, _), (ri, rs, stats) = load(tmp_path / "games"), load(tmp_path / "recbole")
    assert gi.equals(ri) and gs.equals(rs)
    assert stats["source_info"]["title_field"] == "title" and stats["timestamps"] == "file"


def test_recbole_title_field_is_configurable_and_checked(tmp_path):
    paths = write_atomic(tmp_path, title_field="name")
    with pytest.raises(UserError, match=r"no title field among item_id, name, year.*fields.title"):
        build_dataset("r", params("recbole", paths), str(tmp_path / "a"))
    build_dataset("r", {**params("recbole", paths), "fields": {"title": "name"}}, str(tmp_path / "b"))
    assert load(tmp_path / "b")[2]["has_titles"]
    problem = dataset_problem("r", {**params("recbole", paths)}, needs_titles=True)
    assert "has no field named like 'title'" in problem and "fields.title" in problem


def test_recbole_without_timestamp_field_splits_per_user(tmp_path):
    build_dataset("r", params("recbole", write_atomic(tmp_path, timed=False)), str(tmp_path / "out"))
    _, seqs, stats = load(tmp_path / "out")
    assert stats["timestamps"] == "none" and stats["split"] == "leave_one_out"
    assert seqs["timestamp"].null_count() == seqs.height
    with pytest.raises(UserError, match=r"no field 'when'"):
        build_dataset("r", {**params("recbole", write_atomic(tmp_path, timed=False)), "fields": {"timestamp": "when"}},
                      str(tmp_path / "x"))


# ------------------------------------------------------------------------------- config-time checks
def test_datasets_without_titles_are_refused_for_the_teacher(tmp_path):
    assert "paths.titles" in dataset_problem("s", {"source": "sasrec", "paths": {"file": "x"}}, needs_titles=True)
    assert dataset_problem("s", {"source": "sasrec", "paths": {"file": "x"}}, needs_titles=False) is None
    src = write_official(tmp_path)
    assert dataset_problem("o", official(src), needs_titles=True) is None
    (src / "id2name.txt").unlink()
    assert "no id2name.txt" in dataset_problem("o", official(src), needs_titles=True)
    assert "paths.item" in dataset_problem("r", {"source": "recbole", "paths": {"inter": "x"}}, needs_titles=True)
    assert dataset_problem("m", {"source": "ml-100k"}, needs_titles=True) is None


def test_any_noun_passes_the_schema():
    from dllm2rec.schema import validate
    cfg = yaml.safe_load((ROOT / "config.yaml").read_text())
    for ds in cfg["datasets"].values():
        ds["noun"] = "artist"
    validate(cfg)
    cfg["datasets"][next(iter(cfg["datasets"]))]["noun"] = ""
    with pytest.raises(Exception, match="noun|should be non-empty|too short"):
        validate(cfg)


def test_workflow_refuses_an_untitled_dataset_before_any_job(tmp_path):
    project = copy_project(tmp_path)
    (project / "raw").mkdir()
    (project / "raw" / "ex.inter").write_text("user_id:token\titem_id:token\n")
    cfg = yaml.safe_load((project / "config.yaml").read_text())
    cfg["datasets"] = {"mine": {"source": "recbole", "paths": {"inter": "raw/ex.inter"}}}
    cfg["tables"]["datasets"] = ["mine"]
    write_config(project / "mine.yaml", cfg)
    res = snakemake(project, "-n", "--cores", "1", "results/table5.csv", "--configfile", "mine.yaml")
    assert res.returncode != 0
    assert "datasets.mine cannot feed the BIGRec teacher" in res.stdout and "paths.item" in res.stdout
    (project / "raw" / "ex.item").write_text("item_id:token\ttitle:token_seq\n")
    cfg["datasets"]["mine"]["paths"]["item"] = "raw/ex.item"
    write_config(project / "mine.yaml", cfg)
    res = snakemake(project, "-n", "--cores", "1", "results/data/mine/stats.json", "--configfile", "mine.yaml")
    assert res.returncode == 0, res.stdout[-2000:]
    assert "dataset" in res.stdout
