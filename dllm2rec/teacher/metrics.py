"""The teacher's own test metrics (Table 5's BIGRec row) and inference wall time (Table 6).

Full ranking is the grounded top-N list. A position is a hit when its item is the target or
shares the target's exact title (items with one title are indistinguishable to the teacher).
NDCG@K = 1/log2(rank+2) with the 0-based rank of the first hit, 0 beyond K.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.compute as pc

from dllm2rec.io import UserError, parquet_metadata, read_parquet, write_json
from dllm2rec.teacher.prompts import item_titles

KS = (1, 5, 10, 20)


def hit_ranks(topk_items: list[list[int]], targets, titles: list[str]) -> np.ndarray:
    """0-based rank of the first equivalent-to-target item per row, or -1 (not in the list)."""
    ranks = np.full(len(targets), -1, dtype=np.int64)
    for row, (items, target) in enumerate(zip(topk_items, targets)):
        want = titles[target]
        for pos, item in enumerate(items):
            if item == target or titles[item] == want:
                ranks[row] = pos
                break
    return ranks


def ranking_metrics(ranks: np.ndarray, ks=KS) -> dict:
    out = {}
    found = ranks >= 0
    for k in ks:
        hit = found & (ranks < k)
        out[f"HR@{k}"] = float(hit.mean()) if len(ranks) else 0.0
        gain = np.where(hit, 1.0 / np.log2(np.where(found, ranks, 0) + 2.0), 0.0)
        out[f"NDCG@{k}"] = float(gain.mean()) if len(ranks) else 0.0
    return out


def teacher_metrics(ranks: str, data: str, out: str) -> None:
    """Test HR@K / NDCG@K (K = 1, 5, 10, 20), inference seconds and n_test -> ``out`` JSON."""
    table = read_parquet(ranks, "teacher ranks")
    seqs = read_parquet(Path(data) / "sequences.parquet", "sequences table")
    items = read_parquet(Path(data) / "items.parquet", "items table").sort_by("item_id")
    test = seqs.filter(pc.equal(seqs.column("split"), "test")).sort_by("seq_id")
    table = table.sort_by("seq_id")
    if not np.array_equal(table.column("seq_id").to_numpy(), test.column("seq_id").to_numpy()):
        raise UserError(f"{ranks} does not hold exactly the test sequences of {data} "
                        f"({table.num_rows} rows vs {test.num_rows}); rerun the teacher for this dataset.")
    titles = item_titles(items)
    r = hit_ranks(table.column("topk_items").to_pylist(), test.column("target").to_pylist(), titles)
    meta = parquet_metadata(ranks)
    write_json({
        "test": ranking_metrics(r),
        "inference_seconds": float(meta.get("generation_seconds", 0.0) + meta.get("grounding_seconds", 0.0)),
        "n_test": int(test.num_rows),
    }, out)
