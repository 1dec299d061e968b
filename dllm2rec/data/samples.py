"""docs/method.md §1: item ids, per-user order, the two sample rules, the 8:1:1 split, sampling, stats.

Everything is vectorised (numpy / polars / pyarrow) so MovieLens-10M takes seconds. A sample's
history is kept as a range ``pool[lo:hi]`` of one flat item array until the rows that survive
sampling are materialised, so the full sample set is never copied ten times.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl
import pyarrow as pa

from dllm2rec.data.lines import Report, numeric_aware_order
from dllm2rec.data.raw import RawInteractions
from dllm2rec.io import UserError
from dllm2rec.settings import DatasetSettings

SPLITS = ("train", "valid", "test")
RULES = ("amazon", "movielens")


@dataclass
class SampleSet:
    """Samples before the split. History of sample k = pool[lo[k]:hi[k]] (oldest first)."""

    pool: np.ndarray        # int32 item ids
    lo: np.ndarray          # int64
    hi: np.ndarray          # int64
    target: np.ndarray      # int32
    timestamp: np.ndarray | None  # int64; None when the source has no timestamps (split per user)
    user: pa.Array          # str, one per sample
    split: np.ndarray | None = None  # int8 0/1/2 when fixed before the split step (official; leave-one-out)


def index_ids(values: pl.Series) -> tuple[np.ndarray, list[str]]:
    """Codes 0..k-1 in sorted order of the raw id (numeric when all ids are integers)."""
    order = numeric_aware_order(values.unique().to_list())
    codes = values.replace_strict(order, list(range(len(order))), return_dtype=pl.Int64).to_numpy()
    return codes, order


def max_history(params: dict, name: str) -> int:
    value = params.get("max_history", DatasetSettings.max_history)
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise UserError(f"datasets.{name}.max_history must be a positive integer, got {value!r}")
    return value


def clean_interactions(raw: RawInteractions, params: dict, report: Report) -> pl.DataFrame:
    """Drop interactions on untitled items (exact duplicates are dropped in :func:`make_samples`)."""
    df = raw.frame
    report.set("interactions_read", df.height)
    if raw.titles is not None:
        keep = df["item"].is_in(pl.Series(list(raw.titles), dtype=pl.Utf8).implode())
        report.set("interactions_dropped_untitled_item", int((~keep).sum()))
        df = df.filter(keep)
    return df


# BIGRec's preprocessing keeps repeated (user, item, timestamp) rows for both of its pipelines
# (SAI990323/BIGRec, data/game/process.ipynb and data/movie/process.ipynb: every review / rating
# line becomes an interaction), so neither sample rule drops them unless the config says so.
DROP_DUPLICATES_DEFAULT = {"amazon": False, "movielens": False}


def drop_duplicates_setting(params: dict, rule: str, name: str) -> bool:
    value = params.get("drop_duplicates")
    if value is None:
        return DROP_DUPLICATES_DEFAULT.get(rule, False)
    if not isinstance(value, bool):
        raise UserError(f"datasets.{name}.drop_duplicates must be true or false, got {value!r}")
    return value


def make_samples(df: pl.DataFrame, rule: str, L: int, report: Report,
                 drop_duplicates: bool = False, timed: bool = True) -> tuple[SampleSet, list[str], dict]:
    """Apply a sample rule (docs/method.md §1.3) to cleaned interactions; returns samples and item order.

    ``timed`` False: the source has no timestamps; the ``timestamp`` column is only the position
    in the file (each user's order), duplicates cannot be told apart and the samples carry no time.
    """
    if rule not in RULES:
        raise UserError(f"unknown sample_rule {rule!r}; use one of {', '.join(RULES)} (docs/method.md §1.3)")
    item_codes, item_order = index_ids(df["item"])
    user_codes, user_order = index_ids(df["user"])
    codes = pl.DataFrame({"u": user_codes, "i": item_codes, "t": df["timestamp"].cast(pl.Int64)}).with_row_index("row")
    if timed:
        report.set("negative_timestamps", int((codes["t"] < 0).sum()))  # kept: they still order a history
        first = codes.select(pl.struct("u", "i", "t").is_first_distinct()).to_series()
        report.set("duplicate_interactions", int((~first).sum()))
        if drop_duplicates:  # same user, item and timestamp: keep the first in file order
            report.set("duplicate_interactions_dropped", int((~first).sum()))
            codes = codes.filter(first)
    # per user, by timestamp; ties keep file order (row is unique, so the sort is fully determined)
    codes = codes.sort(["u", "t", "row"])
    u = codes["u"].to_numpy()
    items = codes["i"].to_numpy().astype(np.int32)
    t = codes["t"].to_numpy()
    counts = np.bincount(u, minlength=len(user_order))
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    pos = np.arange(len(u)) - starts[u]
    n_u = counts[u]
    labels = None
    if not timed:
        # leave-one-out per user (SASRec's partition): with 3 or more interactions, the last is the
        # test target, the one before the valid target, and the rule cuts train samples from the rest
        loo = n_u >= 3
        labels = np.where(loo & (pos == n_u - 1), 2, np.where(loo & (pos == n_u - 2), 1, 0)).astype(np.int8)
        n_u = np.where(loo, n_u - 2, n_u)  # the train part's length
    if rule == "amazon":
        first = np.minimum(L, n_u - 1)
        keep = (pos >= first) & (pos >= 1) & (pos < n_u)
        report.set("empty_history_skipped", int((counts == 1).sum()))
    else:
        keep = (pos >= L) & (pos < n_u)
        report.set("users_without_samples", int((counts <= L).sum()))
    if labels is not None:  # valid and test targets, with the histories the rule allows
        keep |= (labels > 0) & (pos >= (1 if rule == "amazon" else L))
    p = np.nonzero(keep)[0]
    split = None
    if labels is not None:  # train, then valid, then test; each in user order
        p = p[np.argsort(labels[p], kind="stable")]
        split = labels[p]
    lo = np.maximum(p - L, starts[u[p]])
    samples = SampleSet(pool=items, lo=lo.astype(np.int64), hi=p.astype(np.int64), target=items[p],
                        timestamp=t[p] if timed else None, user=pa.array(user_order, pa.string()).take(pa.array(u[p])),
                        split=split)
    users_with_interactions = len(user_order)
    base = {"users": users_with_interactions, "items": len(item_order), "interactions": int(codes.height)}
    return samples, item_order, base


def chronological_split(s: SampleSet) -> tuple[np.ndarray, np.ndarray]:
    """Order of samples and the split label of each position.

    A split fixed before (official import, or leave-one-out for sources without timestamps, made
    in :func:`make_samples`): the samples' order. Else: stable by target timestamp, then 8:1:1.
    """
    n = len(s.target)
    if s.split is not None:
        order = np.arange(n)
        labels = s.split.astype(np.int8)
    else:
        order = np.argsort(s.timestamp, kind="stable")
        labels = np.full(n, 2, dtype=np.int8)
        labels[: n * 8 // 10] = 0
        labels[n * 8 // 10: n * 9 // 10] = 1
    return order, labels


def sample_rows(labels: np.ndarray, spec: dict | None, name: str) -> np.ndarray:
    """Positions kept after the optional seeded per-split sampling (chronological order kept)."""
    spec = spec or {}
    seed = spec.get("seed")
    seed = 0 if seed is None else seed
    if not isinstance(seed, int) or seed < 0:
        raise UserError(f"datasets.{name}.sample.seed must be a non-negative integer, got {seed!r}")
    kept = []
    for k, split in enumerate(SPLITS):
        idx = np.nonzero(labels == k)[0]
        cap = spec.get(split)
        if cap is not None:
            if not isinstance(cap, int) or isinstance(cap, bool) or cap < 1:
                raise UserError(f"datasets.{name}.sample.{split} must be a positive integer or null, got {cap!r}")
            if cap < len(idx):
                rng = np.random.default_rng([seed, k])
                idx = idx[np.sort(rng.choice(len(idx), size=cap, replace=False))]
        kept.append(idx)
    return np.concatenate(kept)


def history_array(s: SampleSet, rows: np.ndarray) -> pa.ListArray:
    lo, hi = s.lo[rows], s.hi[rows]
    lens = hi - lo
    offsets = np.zeros(len(rows) + 1, dtype=np.int64)
    np.cumsum(lens, out=offsets[1:])
    idx = np.repeat(lo - offsets[:-1], lens) + np.arange(offsets[-1])
    values = pa.array(s.pool[idx].astype(np.int32), pa.int32())
    return pa.ListArray.from_arrays(pa.array(offsets.astype(np.int32), pa.int32()), values)


def finish(s: SampleSet, params: dict, name: str) -> tuple[pa.Table, dict]:
    """Split, check, sample and materialise the sequences table; returns it and split stats."""
    order, labels = chronological_split(s)
    n = len(order)
    before = {split: int((labels == k).sum()) for k, split in enumerate(SPLITS)}
    method = split_method(s)
    for split, count in before.items():
        if count == 0:
            if method == "leave_one_out":
                why = ("leave-one-out (used because the source has no timestamps) takes valid and test "
                       "targets from users with 3 or more interactions (and, for sample_rule movielens, "
                       "a full max_history before them), and none qualifies")
            else:
                why = f"the raw data gives too few sequences for the {method} split"
            raise UserError(f"dataset {name!r}: the {split} split is empty ({n} samples in all): {why}. "
                            f"The students cannot train or be evaluated on it. Fix: give the source more "
                            f"interactions (check paths.*), or lower max_history / use sample_rule amazon, "
                            f"which keep more samples per user. See docs/datasets.md.")
    keep = sample_rows(labels, params.get("sample"), name)
    rows = order[keep]
    seq_id = keep.astype(np.int64)  # position in the full chronological order: sampling never renumbers
    table = pa.table({
        "seq_id": pa.array(seq_id, pa.int64()),
        "user": s.user.take(pa.array(rows)),
        "history": history_array(s, rows),
        "target": pa.array(s.target[rows].astype(np.int32), pa.int32()),
        "timestamp": (pa.array(s.timestamp[rows].astype(np.int64), pa.int64()) if s.timestamp is not None
                      else pa.nulls(len(rows), pa.int64())),
        "split": pa.array(np.array(SPLITS, dtype=object)[labels[keep]], pa.string()),
    })
    after = {split: int((labels[keep] == k).sum()) for k, split in enumerate(SPLITS)}
    return table, {"split": method, "samples": n, "rows_before_sampling": before, "rows": after}


def split_method(s: SampleSet) -> str:
    if s.timestamp is None:
        return "leave_one_out"
    return "given" if s.split is not None else "chronological"


def items_table(order: list[str], titles: dict[str, str] | None) -> pa.Table:
    return pa.table({
        "item_id": pa.array(np.arange(len(order), dtype=np.int32), pa.int32()),
        "raw_id": pa.array(order, pa.string()),
        "title": pa.array([titles.get(r) if titles is not None else None for r in order], pa.string()),
    })


def density(users, items, interactions):
    if not users or not items or interactions is None:
        return None
    return interactions / (users * items)
