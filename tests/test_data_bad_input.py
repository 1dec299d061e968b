"""Bad raw input that is dropped and counted (docs/datasets.md). Bad raw input that is refused with
a UserError naming file, line and fix is a row of the table in tests/test_bad_inputs.py."""
from __future__ import annotations

import json
from pathlib import Path

import polars as pl
from fixtures_data import params, write_games

from dllm2rec.data.build import build_dataset


def stats(out: Path) -> dict:
    return json.loads((out / "stats.json").read_text())


def test_bad_lines_dropped_and_counted(tmp_path):
    (tmp_path / "clean").mkdir()
    build_dataset("g", params("games", write_games(tmp_path / "clean")), str(tmp_path / "clean" / "out"))
    extra = [
        b'{"reviewerID": "A", "asin": "I1", "unixRevi',                              # truncated line
        b'{"reviewerID": "A", "asin": "I2"}',                                        # no timestamp
        b'{"asin": "I3", "unixReviewTime": 5}',                                       # no user
        b'{"reviewerID": "F", "asin": "Q9", "unixReviewTime": 7, "reviewText": "caf\xe9"}',  # not UTF-8, kept
        b"",                                                                           # blank
        b"[1, 2, 3]",                                                                  # not an object
    ]
    meta_extra = [b'{"asin": "Q9", "title": "dupl', b'{"title": "no asin"}']
    paths = write_games(tmp_path, extra_reviews=extra, extra_meta=meta_extra)
    build_dataset("g", params("games", paths), str(tmp_path / "out"))
    s = stats(tmp_path / "out")
    c = s["counts"]
    assert c["malformed_lines"] == 2 and c["records_missing_field"] == 2
    assert c["non_utf8_lines"] == 1 and c["blank_lines"] == 1
    assert c["malformed_meta_lines"] == 1 and c["meta_records_missing_asin"] == 1
    assert s["examples"]["malformed_lines"][0] == f"{paths['reviews']}:26"
    assert s["examples"]["non_utf8_lines"] == [f"{paths['reviews']}:29"]
    # the kept non-UTF-8 review (user F, item Q9) is the only change; the samples are unchanged
    assert s["users"] == 6 and s["items"] == 23
    clean = pl.read_parquet(tmp_path / "clean" / "out" / "sequences.parquet")
    got = pl.read_parquet(tmp_path / "out" / "sequences.parquet")
    assert got.equals(clean)  # Q9 sorts after every other raw id; user F has one item (skipped)
    assert c["empty_history_skipped"] == 2


def test_ml10m_bad_lines_take_the_careful_path(tmp_path):
    ratings = tmp_path / "ratings.dat"
    good = [f"1::{k % 4 + 1}::4::{k}" for k in range(12)]
    ratings.write_bytes(("\n".join(good[:6] + ["1::2::4", "1::::3::77", "1::3::4::later"] + good[6:]) + "\n").encode())
    movies = tmp_path / "movies.dat"
    movies.write_text("".join(f"{k}::Movie {k}::Drama\n" for k in range(1, 5)) + "9\n")
    p = params("ml-10m", {"ratings": str(ratings), "movies": str(movies)}, rule="movielens", max_history=1)
    build_dataset("m", p, str(tmp_path / "out"))
    s = stats(tmp_path / "out")
    assert s["counts"]["malformed_lines"] == 2 and s["counts"]["records_missing_field"] == 1
    assert s["counts"]["malformed_item_lines"] == 1
    assert s["examples"]["malformed_lines"] == [f"{ratings}:7", f"{ratings}:9"]
    assert s["interactions"] == 12 and s["samples"] == 11
