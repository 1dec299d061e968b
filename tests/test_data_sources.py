"""Each raw format read from tiny files: Amazon 2018 / 2014, ML-10M .dat, SASRec text."""
from __future__ import annotations

import json
from pathlib import Path

import polars as pl
from fixtures_data import ID, params, write_games, write_sasrec, write_toys

from dllm2rec.data.build import build_dataset
from dllm2rec.dataset import load_dataset


def load(out: Path):
    return (pl.read_parquet(out / "items.parquet"), pl.read_parquet(out / "sequences.parquet"),
            json.loads((out / "stats.json").read_text()))


def test_toys_dict_literal_meta_equals_games_json(tmp_path):
    (tmp_path / "g").mkdir()
    (tmp_path / "t").mkdir()
    build_dataset("g", params("games", write_games(tmp_path / "g")), str(tmp_path / "g" / "out"))
    build_dataset("t", params("toys", write_toys(tmp_path / "t")), str(tmp_path / "t" / "out"))
    gi, gs, _ = load(tmp_path / "g" / "out")
    ti, ts, stats = load(tmp_path / "t" / "out")
    assert gi.equals(ti) and gs.equals(ts)
    assert stats["source"] == "toys" and stats["has_titles"]
    import gzip
    first = gzip.decompress(Path(stats["source_info"]["meta"]).read_bytes()).splitlines()[0]
    assert first.startswith(b"{'asin': ")  # a Python dict literal, not JSON


def test_plain_and_gzip_files_read_alike(tmp_path):
    import gzip
    paths = write_games(tmp_path)
    plain = {}
    for key, p in paths.items():
        q = Path(p).with_suffix("")  # same name without .gz, plain text
        q.write_bytes(gzip.decompress(Path(p).read_bytes()))
        plain[key] = str(q)
    build_dataset("a", params("games", paths), str(tmp_path / "a"))
    build_dataset("b", params("games", plain), str(tmp_path / "b"))
    assert load(tmp_path / "a")[1].equals(load(tmp_path / "b")[1])


def test_sasrec_format_has_no_time_and_splits_per_user(tmp_path):
    """No timestamps: leave-one-out per user (last sample test, the one before valid), null times."""
    build_dataset("s", params("sasrec", write_sasrec(tmp_path), max_history=2), str(tmp_path / "out"))
    items, seqs, stats = load(tmp_path / "out")
    assert items["raw_id"].to_list() == sorted(ID) and stats["has_titles"]
    assert stats["timestamps"] == "none" and stats["split"] == "leave_one_out"
    assert seqs["timestamp"].null_count() == seqs.height  # never a fake time
    # each user's items in file order; amazon rule with L = 2
    history = {"A": [f"I{k}" for k in range(1, 10)], "B": ["J1", "J3", "J2"], "C": ["C1"],
               "D": [f"K{k}" for k in range(1, 6)], "E": ["E1", "E2", "E3", "E4"]}
    expected = {"train": [], "valid": [], "test": []}

    def sample(u, its, i):
        return (u, [ID[r] for r in its[max(i - 2, 0):i]], ID[its[i]])
    for u, its in history.items():
        m = len(its) - 2 if len(its) >= 3 else len(its)  # leave-one-out: the last two are valid, test
        expected["train"] += [sample(u, its, i) for i in range(max(min(2, m - 1), 1), m)]
        if len(its) >= 3:  # A, B, D, E; C has one interaction
            expected["valid"].append(sample(u, its, len(its) - 2))
            expected["test"].append(sample(u, its, len(its) - 1))
    got = {s: [(r["user"], r["history"], r["target"]) for r in seqs.filter(pl.col("split") == s).iter_rows(named=True)]
           for s in ("train", "valid", "test")}
    assert got == expected
    assert stats["rows"] == {"train": 7, "valid": 4, "test": 4}
    assert expected["test"][0] == ("A", [ID["I7"], ID["I8"]], ID["I9"])
    assert expected["valid"][1] == ("B", [ID["J1"]], ID["J3"])
    assert seqs["seq_id"].to_list() == list(range(15))
    # test users are training users too (a split by file order would put them apart); B's three
    # interactions give only a valid and a test target
    test_users = set(seqs.filter(pl.col("split") == "test")["user"])
    assert test_users - {"B"} <= set(seqs.filter(pl.col("split") == "train")["user"]) and len(test_users) == 4
    # the dataset contract takes null timestamps: the later stages read it as any other
    ds = load_dataset(tmp_path / "out")
    assert {s: ds.split(s).num_rows for s in ("train", "valid", "test")} == stats["rows"]
    assert ds.padded().target.tolist() == seqs["target"].to_list()


def test_sasrec_without_titles_is_accepted_and_marked(tmp_path):
    build_dataset("s", params("sasrec", write_sasrec(tmp_path, titles=False)), str(tmp_path / "out"))
    items, seqs, stats = load(tmp_path / "out")
    assert stats["has_titles"] is False
    assert items["title"].null_count() == items.height == 22
    assert seqs.height == 14


def test_ml10m_dat_files(tmp_path):
    """'::'-separated ratings and Latin-1 movies; numeric ids sort as numbers; max_history 1."""
    ratings = tmp_path / "ratings.dat"
    lines = [f"7::{item}::4.5::{1000 + k}" for k, item in enumerate([10, 2, 1, 33, 2, 10, 1, 2, 33, 10, 1, 2])]
    lines += ["8::1::3::999", "8::33::3::2000"]
    ratings.write_text("\n".join(lines) + "\n")
    movies = tmp_path / "movies.dat"
    movies.write_bytes("1::Toy Story (1995)::Animation\n2::Jumanji (1995)::Adventure\n"
                       "10::GoldenEye (1995)::Action\n33::Wings of Courage (1995)::Adventure|Romance\n"
                       "50::Am\xe9lie (2001)::Comedy\n".encode("latin-1"))
    p = params("ml-10m", {"ratings": str(ratings), "movies": str(movies)}, rule="movielens", max_history=1)
    build_dataset("m", p, str(tmp_path / "out"))
    items, seqs, stats = load(tmp_path / "out")
    assert items["raw_id"].to_list() == ["1", "2", "10", "33"]   # 50 has no rating
    assert items["title"][2] == "GoldenEye (1995)"
    code = {"1": 0, "2": 1, "10": 2, "33": 3}
    # user 7: 12 ratings -> 11 samples; user 8: 2 ratings (1 @999, 33 @2000) -> 1 sample
    assert stats["samples"] == 12 and stats["users"] == 2 and stats["interactions"] == 14
    first = seqs.row(0, named=True)
    assert (first["user"], first["history"], first["target"]) == ("7", [code["10"]], code["2"])
    last = seqs.row(seqs.height - 1, named=True)
    assert (last["user"], last["history"], last["target"], last["timestamp"]) == ("8", [0], 3, 2000)


def test_ml10m_latin1_title_kept(tmp_path):
    ratings = tmp_path / "ratings.dat"
    ratings.write_text("".join(f"1::50::4::{k}\n" for k in range(12)))
    movies = tmp_path / "movies.dat"
    movies.write_bytes("50::Am\xe9lie (2001)::Comedy\n".encode("latin-1"))
    p = params("ml-10m", {"ratings": str(ratings), "movies": str(movies)}, rule="movielens", max_history=1)
    build_dataset("m", p, str(tmp_path / "out"))
    items, _, stats = load(tmp_path / "out")
    assert items["title"].to_list() == ["Amélie (2001)"]
    assert stats["counts"]["non_utf8_lines"] == 1
