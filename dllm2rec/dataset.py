"""The dataset contract: what the data stage writes and every later stage reads.

A dataset folder (``results/data/{dataset}``, see :mod:`dllm2rec.layout`) holds

* ``items.parquet``: ``item_id`` int32 (exactly 0..n-1), ``raw_id`` str, ``title`` str (null when
  the source has none);
* ``sequences.parquet``: ``seq_id`` int64 (stable across sampling), ``user`` str, ``history``
  list<int32> (oldest first, never empty), ``target`` int32, ``timestamp`` int64 (the target's
  time; null for every row when the source has no timestamps), ``split`` str (train / valid /
  test, none empty);
* ``stats.json``: Table 4's counts and what made the dataset: ``dataset``, ``source``,
  ``sample_rule``, ``max_title_chars`` (the cap on a title's length), ``timestamps`` (``file``; ``none``: the source has none; ``row_order``: the
  official import), ``split`` (``chronological`` 8:1:1, ``leave_one_out`` per user for sources
  without timestamps, ``given`` by an official import), ``users``, ``items``, ``interactions``,
  ``density``, ``rows`` per split, and the data stage's counters of what it dropped or kept
  (``duplicate_interactions``, ``negative_timestamps``, ``items_without_title``, ...).

Both Parquet files carry the data stage's metadata (``seq_size``, ``has_titles``, the config).
:func:`write_dataset` checks and writes the three files; :func:`load_dataset` reads and checks
them once and hands out the columns the stages use. Every problem is a
:class:`~dllm2rec.io.UserError` that names the file and says to rebuild the dataset.
"""
from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from dllm2rec.data.sources import SOURCES_WITH_TITLES  # noqa: F401  (re-exported: the teacher's errors name it)
from dllm2rec.io import UserError, parquet_metadata, read_json, read_parquet, sha256, write_json, write_parquet
from dllm2rec.layout import DATASET_FILES

SPLITS = ("train", "valid", "test")

ITEMS_SCHEMA = pa.schema([("item_id", pa.int32()), ("raw_id", pa.string()), ("title", pa.string())])
SEQUENCES_SCHEMA = pa.schema([
    ("seq_id", pa.int64()), ("user", pa.string()), ("history", pa.list_(pa.int32())), ("target", pa.int32()),
    ("timestamp", pa.int64()), ("split", pa.string()),
])


def paths(folder) -> dict[str, Path]:
    """{"items": .., "sequences": .., "stats": ..} inside a dataset folder."""
    return {part: Path(folder) / name for part, name in DATASET_FILES.items()}


def items_table(raw_ids: list[str], titles: list[str | None]) -> pa.Table:
    """The items table for items 0..n-1 in this order."""
    return pa.table({"item_id": pa.array(np.arange(len(raw_ids), dtype=np.int32), pa.int32()),
                     "raw_id": pa.array(raw_ids, pa.string()), "title": pa.array(titles, pa.string())},
                    schema=ITEMS_SCHEMA)


def _check_schema(table: pa.Table, schema: pa.Schema, path) -> None:
    missing = [f.name for f in schema if f.name not in table.column_names]
    if missing:
        raise UserError(f"{path}: missing column(s) {missing} (has {table.column_names}); rebuild the dataset.")


def write_dataset(folder, items: pa.Table, sequences: pa.Table, stats: dict, meta: dict) -> None:
    """Check and write the three files of a dataset folder (each atomically)."""
    p = paths(folder)
    _check_schema(items, ITEMS_SCHEMA, p["items"])
    _check_schema(sequences, SEQUENCES_SCHEMA, p["sequences"])
    write_parquet(items, p["items"], meta)
    write_parquet(sequences, p["sequences"], meta)
    write_json(stats, p["stats"])


# columns of a slice of the sequences table (Dataset.split), for the stages that read them
def seq_ids(rows: pa.Table) -> np.ndarray:
    return rows.column("seq_id").to_numpy()


def histories(rows: pa.Table) -> list[list[int]]:
    return rows.column("history").to_pylist()


def targets(rows: pa.Table) -> np.ndarray:
    return rows.column("target").to_numpy()


def item_ids(items: pa.Table) -> np.ndarray:
    """The item_id column of an items table (rows in any order)."""
    return items.column("item_id").to_numpy()


def fingerprint(folder) -> str:
    """Which dataset a folder holds, by content: a short sha256 over its items and sequences
    files. Artifacts made from a dataset record it (a student's model.pt, ...) so that one paired
    with another dataset of the same size is refused rather than read."""
    p = paths(folder)
    h = hashlib.sha256()
    for part in ("items", "sequences"):
        h.update(f"{part}\0{sha256(p[part])}\n".encode())
    return h.hexdigest()[:16]


def raw_ids(items: pa.Table) -> list[str]:
    """The source's id of each item, in item_id order (two datasets of one source share them)."""
    return items.column("raw_id").to_pylist()


def read_stats(path) -> dict:
    """A dataset's stats.json (Table 4's counts; ``dataset`` is its config name)."""
    return read_json(path)


@dataclass
class Dataset:
    """One dataset folder, read and checked. ``sequences`` keeps the file's row order."""

    folder: Path
    items: pa.Table
    sequences: pa.Table
    meta: dict
    stats: dict

    @property
    def name(self) -> str:
        """The dataset's config name (recorded by the data stage; else the folder's name)."""
        return self.meta.get("dataset") or self.stats.get("dataset") or self.folder.name

    @functools.cached_property
    def fingerprint(self) -> str:
        """:func:`fingerprint` of the folder."""
        return fingerprint(self.folder)

    @property
    def n_items(self) -> int:
        return self.items.num_rows

    @property
    def paths(self) -> dict[str, Path]:
        return paths(self.folder)

    def titles(self) -> list[str | None]:
        """Title of item i at position i."""
        return self.items.column("title").to_pylist()

    def require_titles(self) -> list[str]:
        """The titles, or a UserError when the source has none (the teacher needs them)."""
        titles = self.titles()
        if not self.stats.get("has_titles", True) or not any(t for t in titles):
            raise UserError(
                f"{self.folder}: the dataset has no item titles, but the BIGRec teacher generates and grounds titles. "
                f"Use a source that provides titles ({SOURCES_WITH_TITLES}); students without a teacher still train on it."
            )
        return titles

    def split(self, split: str, by_seq_id: bool = False) -> pa.Table:
        """The rows of one split (file order, or sorted by seq_id)."""
        rows = self.sequences.filter(pc.equal(self.sequences.column("split"), split))
        return rows.sort_by("seq_id") if by_seq_id else rows

    def seq_size(self) -> int:
        """The history width of the official exchange format (the configured max_history)."""
        longest = max((len(h) for h in self.sequences.column("history").to_pylist()), default=1)
        size = int(self.meta.get("seq_size") or (self.meta.get("params") or {}).get("max_history") or longest)
        if longest > size:
            raise UserError(f"{self.paths['sequences']}: a history has {longest} items, more than seq_size {size}.")
        return size

    def padded(self) -> "Padded":
        """Every sequence as a padded history matrix (pad id n), in file order."""
        hist = self.sequences.column("history").combine_chunks()
        offsets = np.asarray(hist.offsets, dtype=np.int64)
        flat = hist.flatten().to_numpy(zero_copy_only=False).astype(np.int64)
        lengths = np.diff(offsets)
        rows, width = len(lengths), int(lengths.max()) if len(lengths) else 1
        matrix = np.full((rows, width), self.n_items, dtype=np.int64)
        matrix[np.repeat(np.arange(rows), lengths), np.arange(len(flat)) - np.repeat(offsets[:-1], lengths)] = flat
        split = np.asarray(self.sequences.column("split").to_numpy(zero_copy_only=False))
        return Padded(seq_id=self.sequences.column("seq_id").to_numpy().astype(np.int64), history=matrix,
                      lengths=lengths, target=self.sequences.column("target").to_numpy().astype(np.int64),
                      split=split)


@dataclass
class Padded:
    seq_id: np.ndarray  # [rows] int64
    history: np.ndarray  # [rows, max_len] int64, right-padded with n_items
    lengths: np.ndarray  # [rows] int64, >= 1
    target: np.ndarray  # [rows] int64
    split: np.ndarray  # [rows] str


def load_dataset(folder) -> Dataset:
    """Read a dataset folder and check the contract: item ids exactly 0..n-1 (sorted by id),
    histories non-empty, item ids in range, no split empty."""
    folder = Path(folder)
    p = paths(folder)
    items = read_parquet(p["items"], "items table", rule="dataset")
    _check_schema(items, ITEMS_SCHEMA, p["items"])
    items = items.sort_by("item_id")
    ids = items.column("item_id").to_numpy()
    n = len(ids)
    if n == 0 or not np.array_equal(ids, np.arange(n)):
        raise UserError(f"{p['items']}: item_id must be exactly 0..n-1; rebuild the dataset.")
    seqs = read_parquet(p["sequences"], "sequences table", rule="dataset")
    _check_schema(seqs, SEQUENCES_SCHEMA, p["sequences"])
    hist = seqs.column("history").combine_chunks()
    lengths = np.diff(np.asarray(hist.offsets, dtype=np.int64))
    if (lengths < 1).any():
        bad = int(seqs.column("seq_id").to_numpy()[np.flatnonzero(lengths < 1)[0]])
        raise UserError(f"{p['sequences']}: seq_id {bad} has an empty history; rebuild the dataset.")
    flat = hist.flatten().to_numpy(zero_copy_only=False)
    targets = seqs.column("target").to_numpy()
    if len(flat) and (flat.min() < 0 or flat.max() >= n) or len(targets) and (targets.min() < 0 or targets.max() >= n):
        raise UserError(f"{p['sequences']}: item ids outside 0..{n - 1}; rebuild the dataset.")
    split_col = seqs.column("split")
    for split in SPLITS:
        if not pc.any(pc.equal(split_col, split)).as_py():
            raise UserError(f"{p['sequences']}: split {split!r} is empty; rebuild the dataset.")
    stats = read_json(p["stats"]) if p["stats"].exists() else {}
    return Dataset(folder=folder, items=items, sequences=seqs, meta=parquet_metadata(p["sequences"]), stats=stats)


def read_titles(items_path) -> list[str | None]:
    """Title of item i at position i, from a dataset's items table alone (the tables' analyses)."""
    items = read_parquet(items_path, "items table", rule="dataset")
    _check_schema(items, ITEMS_SCHEMA, items_path)
    return items.sort_by("item_id").column("title").to_pylist()


# --- popularity.json: the reference rows of Table 5 ---------------------------------------------
POPULARITY_KEYS = ("dataset", "n_items", "n_train", "popularity", "chance")


def write_popularity(out, dataset: str, n_items: int, n_train: int, popularity: dict, chance: dict,
                     popularity_targets: dict) -> None:
    """``popularity``: {split: metrics} of ranking every sequence's items by how often each occurs in
    the train split's sequences (histories and targets); ``popularity_targets``: the same by how
    often each is a train target; ``chance``: the expected metrics of a uniformly random ranking."""
    write_json({"dataset": dataset, "n_items": n_items, "n_train": n_train, "popularity": popularity,
                "popularity_targets": popularity_targets, "chance": chance}, out)


def read_popularity(path) -> dict:
    data = read_json(path)
    missing = [k for k in POPULARITY_KEYS if k not in data]
    if missing:
        raise UserError(f"{path}: popularity reference without {missing}; rerun the popularity rule.")
    return data
