"""The official DLLM2Rec exchange format: export, import, and exact round trips."""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import polars as pl
import pytest
from fixtures_data import AMAZON_EXPECTED, ID, params, title, write_games, write_official

from dllm2rec.data.build import build_dataset
from dllm2rec.data.official import export_official
from dllm2rec.io import UserError

FILES = ("train_data.df", "val_data.csv", "test_data.csv", "data_statis.df", "id2name.txt")


def assert_same_folder(a: Path, b: Path):
    for name in ("train_data.df", "data_statis.df"):
        pd.testing.assert_frame_equal(pd.read_pickle(a / name), pd.read_pickle(b / name), check_exact=True)
    for name in ("val_data.csv", "test_data.csv", "id2name.txt"):
        assert (a / name).read_bytes() == (b / name).read_bytes(), name


def test_export_shape_matches_released_files(tmp_path):
    build_dataset("g", params("games", write_games(tmp_path)), str(tmp_path / "data"))
    export_official(str(tmp_path / "data"), str(tmp_path / "off"))
    n = len(ID)
    train = pd.read_pickle(tmp_path / "off" / "train_data.df")
    assert list(train.columns) == ["seq", "len_seq", "next"] and len(train) == 8
    _, h, t, _ = AMAZON_EXPECTED[1]  # B: two-item history, padded with n
    assert train["seq"][1] == h + [n] and train["len_seq"][1] == 2 and train["next"][1] == t
    val = (tmp_path / "off" / "val_data.csv").read_text().splitlines()
    _, h, t, _ = AMAZON_EXPECTED[8]
    assert val == ["seq,len_seq,next", f'"{h}",3,{float(t)}']
    statis = pd.read_pickle(tmp_path / "off" / "data_statis.df")
    assert statis["seq_size"][0] == 3 and statis["item_num"][0] == n
    lines = (tmp_path / "off" / "id2name.txt").read_text().splitlines()
    assert lines[0] == f"0::{title(min(ID))}" and len(lines) == n


def test_round_trip_ours_official_ours_official(tmp_path):
    build_dataset("g", params("games", write_games(tmp_path)), str(tmp_path / "d1"))
    export_official(str(tmp_path / "d1"), str(tmp_path / "o1"))
    build_dataset("o", {"source": "official", "max_history": 3, "paths": {"dir": str(tmp_path / "o1")}},
                  str(tmp_path / "d2"))
    export_official(str(tmp_path / "d2"), str(tmp_path / "o2"))
    assert_same_folder(tmp_path / "o1", tmp_path / "o2")
    a, b = (pl.read_parquet(tmp_path / d / "sequences.parquet") for d in ("d1", "d2"))
    cols = ["seq_id", "history", "target", "split"]
    assert a.select(cols).equals(b.select(cols))
    i1, i2 = (pl.read_parquet(tmp_path / d / "items.parquet") for d in ("d1", "d2"))
    assert i1["title"].equals(i2["title"])
    stats = json.loads((tmp_path / "d2" / "stats.json").read_text())
    assert stats["timestamps"] == "row_order" and stats["has_titles"] and stats["users"] is None


def test_round_trip_official_ours_official(tmp_path):
    src = write_official(tmp_path)
    build_dataset("o", {"source": "official", "max_history": 10, "paths": {"dir": str(src)}}, str(tmp_path / "d"))
    export_official(str(tmp_path / "d"), str(tmp_path / "o"))
    assert_same_folder(src, tmp_path / "o")
    seqs = pl.read_parquet(tmp_path / "d" / "sequences.parquet")
    assert seqs["split"].to_list() == ["train"] * 10 + ["valid"] * 2 + ["test"] * 2
    assert seqs["timestamp"].to_list() == list(range(14)) == seqs["seq_id"].to_list()
    assert seqs["history"][3].to_list() == [4, 3, 2, 1] and seqs["target"][3] == 0


def test_official_without_titles_and_alternative_id2name(tmp_path):
    src = write_official(tmp_path)
    (src / "id2name.txt").unlink()
    build_dataset("o", {"source": "official", "max_history": 10, "paths": {"dir": str(src)}}, str(tmp_path / "d"))
    assert json.loads((tmp_path / "d" / "stats.json").read_text())["has_titles"] is False
    names = tmp_path / "names.txt"
    names.write_text("".join(f"Name {i}\t{i}\n" for i in range(5)))
    build_dataset("o", {"source": "official", "max_history": 10, "paths": {"dir": str(src), "titles": str(names)}},
                  str(tmp_path / "e"))
    items = pl.read_parquet(tmp_path / "e" / "items.parquet")
    assert items["title"].to_list() == [f"Name {i}" for i in range(5)]


def test_official_bad_id_names_file_and_line(tmp_path):
    src = write_official(tmp_path)
    text = (src / "test_data.csv").read_text().replace(",4.0", ",9.0")
    (src / "test_data.csv").write_text(text)
    with pytest.raises(UserError, match=r"test_data.csv:3: an item id is outside 0..4"):
        build_dataset("o", {"source": "official", "max_history": 10, "paths": {"dir": str(src)}}, str(tmp_path / "d"))


def test_official_missing_file(tmp_path):
    src = write_official(tmp_path)
    (src / "val_data.csv").unlink()
    with pytest.raises(UserError, match=r"no valid file \(val_data.csv / Val_data.csv"):
        build_dataset("o", {"source": "official", "paths": {"dir": str(src)}}, str(tmp_path / "d"))
    with pytest.raises(UserError, match="paths.dir"):
        build_dataset("o", {"source": "official"}, str(tmp_path / "d"))


class _Payload:
    """Unpickling this creates a file: what a malicious train_data.df could do."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.mark.parametrize("name", ["train_data.df", "data_statis.df"])
def test_pickle_payload_never_runs(tmp_path, name):
    """A release whose pickle carries a payload is refused, naming the file and the global, and the
    payload does not run; `convert-official --trust-pickle` is the way for a trusted folder."""
    import pickle

    src = write_official(tmp_path)
    marker = tmp_path / "pwned"
    df = pd.read_pickle(src / name)
    with open(src / name, "wb") as fh:  # a DataFrame, and in the same pickle the payload
        pickle.dump({"frame": df, "x": _Payload(marker)}, fh)
    cfg = {"source": "official", "max_history": 4, "paths": {"dir": str(src)}}
    with pytest.raises(UserError, match=rf"{name}: not loaded: the pickle calls (io|builtins)\.open.*could run "
                                        r"code.*convert-official --trust-pickle"):
        build_dataset("o", cfg, str(tmp_path / "d"))
    assert not marker.exists()
    # the safe reader still reads the good pickles of every protocol
    from dllm2rec.data.official import read_pickle_safely
    for proto in (2, 4, 5):
        df.to_pickle(tmp_path / "good.df", protocol=proto)
        pd.testing.assert_frame_equal(read_pickle_safely(tmp_path / "good.df"), df)


def test_convert_trusted_pickles_to_csv(tmp_path):
    """A trusted folder converted to CSV imports exactly as the pickled one."""
    from dllm2rec.cli import main as cli_main

    src = write_official(tmp_path)
    assert cli_main(["convert-official", "--trust-pickle", str(src), "--out", str(tmp_path / "csv")]) == 0
    assert sorted(p.name for p in (tmp_path / "csv").iterdir()) == [
        "data_statis.csv", "id2name.txt", "test_data.csv", "train_data.csv", "val_data.csv"]
    for folder, out in ((src, "d1"), (tmp_path / "csv", "d2")):
        build_dataset("o", {"source": "official", "max_history": 4, "paths": {"dir": str(folder)}}, str(tmp_path / out))
    a, b = (pl.read_parquet(tmp_path / d / "sequences.parquet") for d in ("d1", "d2"))
    assert a.equals(b)
